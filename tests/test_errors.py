"""Failures say what failed and where: non-finite scores, unreadable inputs, job tracebacks."""

import copy
import json
import logging

import pytest

from fourdvarnet import figures, pipeline
from fourdvarnet.data import UnreadableFileError, load_dataset
from fourdvarnet.tables import make_table


def truncate(path, out):
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


# --- non-finite scores ------------------------------------------------------------------------


def test_check_scores_names_the_row_the_scores_and_the_cause():
    pipeline.check_scores({"r_score": 1.0, "seed": 0, "system": "l63"}, "none-rk4-fsgd")
    scores = {"r_score": float("nan"), "ode_score": float("inf"), "fourdvar_score": 0.1,
              "system": "l63", "solver": "fsgd"}  # fmt: skip
    with pytest.raises(ValueError) as info:
        pipeline.check_scores(scores, "none-rk4-fsgd")
    msg = str(info.value)
    assert "none-rk4-fsgd" in msg and "r_score=nan" in msg and "ode_score=inf" in msg
    assert "fourdvar_score" not in msg.replace("evaluate.", "")
    assert "evaluate.l63.fsgd.step" in msg


def test_a_diverged_fsgd_writes_nothing(l63_files, small, tmp_path):
    ev = copy.deepcopy(small.eval)
    ev["fsgd"]["step"] = 1e8
    recon, scores = tmp_path / "recon.nc", tmp_path / "scores.json"
    with pytest.raises(pipeline.ScoreError, match=r"none-rk4-fsgd.*fsgd\.step"):
        pipeline.evaluate_row(
            "none-rk4-fsgd", "l63", 0, l63_files["test"], small.model, ev, recon, scores
        )
    assert not recon.exists() and not scores.exists()


def score_file(path, **scores):
    rec = {"system": "l63", "scheme": "none", "prior": "rk4", "solver": "fsgd", "seed": 0}
    rec.update(r_score=1.0, fourdvar_score=0.1, ode_score=1e-5, r_score_observed=1.0)
    rec.update(r_score_unobserved=1.0, **scores)
    path.write_text(json.dumps(rec))
    return path


def test_make_table_refuses_non_finite_scores_naming_the_file(tmp_path):
    good = score_file(tmp_path / "good.json")
    bad = score_file(tmp_path / "bad.json", r_score=float("nan"))
    assert "NaN" in bad.read_text()  # what json.dumps writes, and json.loads reads back
    with pytest.raises(ValueError, match=r"bad\.json.*non-finite.*r_score"):
        make_table([good, bad], "l63")


def test_make_table_names_a_truncated_score_file(tmp_path):
    cut = truncate(score_file(tmp_path / "s.json"), tmp_path / "cut.json")
    with pytest.raises(OSError, match=r"cut\.json.*unreadable JSON file.*evaluate"):
        make_table([cut], "l63")


# --- unreadable NetCDF ------------------------------------------------------------------------


def test_a_truncated_split_file_is_named_with_the_rule_that_writes_it(l63_files, tmp_path):
    cut = truncate(l63_files["test"], tmp_path / "l63_test.nc")
    with pytest.raises(OSError) as info:
        load_dataset(cut)
    msg = str(info.value)
    assert str(cut) in msg and "unreadable" in msg and "simulate" in msg and "delete" in msg


def test_a_truncated_evaluation_file_is_named_by_the_figures(l63_files, tmp_path):
    cut = truncate(l63_files["test"], tmp_path / "seed0.nc")
    with pytest.raises(OSError, match=r"seed0\.nc.*'FSGD'.*unreadable.*evaluate"):
        figures.load_evals({"FSGD": cut})


# --- tracebacks in the job's log --------------------------------------------------------------


def test_job_log_writes_the_traceback_to_the_log_and_raises_again(tmp_path, keep_logging):
    log = tmp_path / "logs" / "job.log"

    def failing_stage():
        raise ValueError("the data went missing")

    with pytest.raises(ValueError, match="went missing"):
        with pipeline.job_log(log):
            logging.getLogger("fourdvarnet").info("starting")
            failing_stage()
    text = log.read_text()
    assert "starting" in text
    assert "Traceback (most recent call last)" in text and "in failing_stage" in text
    assert "ValueError: the data went missing" in text


def test_also_stderr_tees_without_changing_the_log_file(tmp_path, keep_logging, capfd):
    with pipeline.job_log(tmp_path / "a.log"):
        logging.getLogger("fourdvarnet.training").info("epoch 1/2 loss 0.5")
    alone = capfd.readouterr().err
    with pipeline.job_log(tmp_path / "b.log", also_stderr=True, tag="train l63/x/seed0"):
        logging.getLogger("fourdvarnet.training").info("epoch 1/2 loss 0.5")
    err = capfd.readouterr().err
    assert "epoch 1/2" not in alone
    assert "train l63/x/seed0: epoch 1/2 loss 0.5" in err

    def lines(name):  # without the timestamp
        return [line.split(" ", 2)[2] for line in (tmp_path / name).read_text().splitlines()]

    assert lines("b.log") == lines("a.log") == ["INFO fourdvarnet.training: epoch 1/2 loss 0.5"]


# --- an unreadable input: one message that says how to rebuild it -----------------------------


def test_a_truncated_workflow_file_names_the_command_that_rebuilds_it(l63_files, tmp_path):
    data = tmp_path / "results" / "quick" / "data"
    data.mkdir(parents=True)
    cut = truncate(l63_files["test"], data / "l63_test.nc")
    with pytest.raises(UnreadableFileError) as info:
        load_dataset(cut)
    msg = str(info.value)
    assert msg.startswith(f"{cut}: unreadable NetCDF file") and "`simulate` rule" in msg
    assert "`snakemake --config preset=quick --forcerun results/quick/data/l63_test.nc`" in msg
    assert info.value.path == str(cut) and isinstance(info.value, OSError)
    assert info.value.__cause__.__suppress_context__  # not xarray's file-cache KeyError


def test_job_log_gives_an_unreadable_input_one_line_and_its_traceback_to_the_log(
    l63_files, tmp_path, keep_logging, capfd
):
    cut = truncate(l63_files["test"], tmp_path / "l63_test.nc")
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as info:  # no traceback printed by the interpreter
        with pipeline.job_log(log, also_stderr=True, tag="evaluate l63/none-rk4-fsgd/seed0"):
            logging.getLogger("fourdvarnet").info("starting")
            load_dataset(cut)
    assert info.value.code == 1
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "unreadable NetCDF file" in line]
    assert len(said) == 1 and "Traceback" not in err, err
    assert said[0].startswith(f"evaluate l63/none-rk4-fsgd/seed0: {cut}: unreadable")
    assert f"traceback in {log}" in said[0] and "delete it" in said[0]
    text = log.read_text()
    assert "starting" in text and "failed: UnreadableFileError" in text
    assert "Traceback (most recent call last)" in text and "in read_netcdf" in text


def test_job_log_without_a_log_file_raises_an_unreadable_input_again(
    l63_files, tmp_path, keep_logging
):
    cut = truncate(l63_files["test"], tmp_path / "l63_test.nc")
    with pytest.raises(UnreadableFileError, match="unreadable"):
        with pipeline.job_log(None):
            load_dataset(cut)


def test_the_rebuild_advice_keeps_the_users_own_config_options(l63_files, tmp_path, monkeypatch):
    """Pasting the advice rebuilds the user's set-up: their --configfile and --config values,
    quoted for the shell, as the workflow passes them to its jobs."""
    from fourdvarnet.data import REBUILD_OPTIONS
    from fourdvarnet.workflow_config import rebuild_options

    options = rebuild_options(["preset=quick", "data={l63: {obs: {every: 4}}}"], ["mine.yaml"])
    assert options == "--configfile mine.yaml --config preset=quick 'data={l63: {obs: {every: 4}}}'"
    monkeypatch.setenv(REBUILD_OPTIONS, options)
    data = tmp_path / "results" / "quick" / "data"
    data.mkdir(parents=True)
    cut = truncate(l63_files["test"], data / "l63_test.nc")
    with pytest.raises(UnreadableFileError, match="snakemake --configfile mine.yaml --config "
                       r"preset=quick 'data=\{l63: \{obs: \{every: 4\}\}\}' --forcerun "
                       "results/quick/data/l63_test.nc`"):  # fmt: skip
        load_dataset(cut)


@pytest.mark.parametrize("kind", ["json", "checkpoint"])
def test_an_unreadable_score_or_checkpoint_is_one_message_with_its_path(tmp_path, kind):
    import torch

    from fourdvarnet.data import read_json, read_torch

    folder = tmp_path / "results" / "quick" / ("eval" if kind == "json" else "models")
    folder.mkdir(parents=True)
    if kind == "json":
        path = folder / "seed0.json"
        path.write_text('{"r_score": 1.0, "sys')
        read = lambda: read_json(path, f"score file {path}", "the `evaluate` rule")  # noqa: E731
    else:
        path = folder / "seed0.pt"
        torch.save({"w": torch.zeros(1000)}, tmp_path / "full.pt")
        truncate(tmp_path / "full.pt", path)
        read = lambda: read_torch(path, f"checkpoint {path}", "the `train` rule")  # noqa: E731
    with pytest.raises(UnreadableFileError) as info:
        read()
    msg = str(info.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "\n" not in msg
    rel = path.relative_to(tmp_path).as_posix()
    assert f"--forcerun {rel}`" in msg and "deleting it is not enough" in msg


def test_a_job_interrupted_says_one_line(tmp_path, keep_logging, capfd):
    """Ctrl-C reaches every running job: each says one line, not a traceback."""
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as info:
        with pipeline.job_log(log, tag="train l63/supervised-rk4-conv/seed0"):
            raise KeyboardInterrupt
    assert info.value.code == 130
    err = capfd.readouterr().err
    assert err.strip() == "train l63/supervised-rk4-conv/seed0: interrupted"
    assert "Traceback (most recent call last)" in log.read_text()
