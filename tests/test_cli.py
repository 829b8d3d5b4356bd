"""The command line runs every stage from a config file (tiny L63 preset)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from fourdvarnet import cli
from fourdvarnet.cli import load_config, main


@pytest.fixture
def config_file(tmp_path, l63_cfg, small):
    raw = {
        "preset": "tiny",
        "data": {"l63": dict(l63_cfg, n_train=64, n_val=16, n_test=8)},
        "model": {"l63": small.model},
        "train": {"l63": dict(small.train, epochs=1)},
        "evaluate": {"l63": small.eval},
        "figures": {"fig2": {"FSGD": "none-rk4-fsgd", "fixed point": "none-rk4-fixed_point"}},
        "presets": {"tiny": {"data": {"l63": {"seed": 4}}}, "other": {}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_load_config_applies_the_preset(config_file):
    cfg = load_config(config_file)
    assert cfg["data"]["l63"]["seed"] == 4 and "presets" not in cfg
    assert load_config(config_file, "other")["data"]["l63"]["seed"] == 11
    with pytest.raises(ValueError, match="nope"):
        load_config(config_file, "nope")


def test_cli_end_to_end(config_file, tmp_path, keep_logging):
    common = ["--config", str(config_file), "--log", str(tmp_path / "log.txt")]
    data = tmp_path / "data"
    main([*common, "simulate", "--system", "l63", "--out-dir", str(data)])
    for split in ("train", "val", "test"):
        ds = xr.load_dataset(data / f"l63_{split}.nc")
        assert ds.attrs["seed"] == 4  # the preset's value
    ckpt = tmp_path / "m.pt"
    row = ["--system", "l63", "--row", "supervised-rk4-conv", "--seed", "0"]
    main([*common, "train", *row, "--data-dir", str(data), "--out", str(ckpt)])
    assert ckpt.exists()
    scores = tmp_path / "scores.json"
    main(
        [
            *common,
            "evaluate",
            *row,
            "--data-dir",
            str(data),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "recon.nc"),
            "--scores",
            str(scores),
        ]
    )
    s = json.loads(scores.read_text())
    assert s["experiment"] == "l63/supervised-rk4-conv/seed0" and s["r_score"] > 0
    out = tmp_path / "table1.csv"
    main(["table", "--system", "l63", "--scores", str(scores), "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table["row"]) == ["supervised-rk4-conv"]
    assert table["r_score_mean"].iloc[0] == pytest.approx(s["r_score"], rel=1e-3)


def test_cli_unknown_system(config_file, tmp_path, keep_logging):
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                str(config_file),
                "simulate",
                "--system",
                "l42",
                "--out-dir",
                str(tmp_path / "d"),
            ]
        )
    assert not (tmp_path / "d").exists()


def test_help_imports_neither_torch_nor_the_pipeline():
    """``fourdvarnet --help`` answers at once: the heavy modules load inside the commands."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fourdvarnet.cli as cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'fourdvarnet.pipeline') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: fourdvarnet" in out
    assert out.strip().endswith("[]"), out


def test_log_gets_the_traceback_and_stderr_still_gets_the_log(tmp_path, keep_logging, capfd):
    cut = tmp_path / "cut.json"
    cut.write_text('{"r_score": 1.0, "sys')
    log = tmp_path / "log.txt"
    args = ["--log", str(log), "table", "--system", "l63", "--scores", str(cut)]
    with pytest.raises(SystemExit, match="cut.json") as e:
        main([*args, "--out", str(tmp_path / "t.csv")])
    # one line on the console (the message, where the traceback is), the traceback in the log
    assert "\n" not in str(e.value) and f"traceback in {log}" in str(e.value)
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "unreadable JSON file" in text
    assert "Traceback" not in capfd.readouterr().err
    with pytest.raises(OSError, match="cut.json"):  # --debug: the exception itself
        main(["--debug", *args, "--out", str(tmp_path / "t.csv")])


@pytest.mark.parametrize(
    "key,hint",
    [("trian.l63.epochs", "did you mean 'train' for 'trian'?"),
     ("evaluate.l63.n_iterr", "did you mean 'n_iter' for 'n_iterr'?"),
     ("train.l63.schedule", "train.l63.schedule")],
)  # fmt: skip
def test_a_bad_set_key_is_refused_in_one_line_naming_the_nearest(
    config_file, tmp_path, keep_logging, key, hint
):
    args = ["--config", str(config_file), "--set", f"{key}=3", "simulate", "--system", "l63"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--out-dir", str(tmp_path / "d")])
    assert hint in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "d").exists()


def test_an_interrupt_is_one_line(config_file, tmp_path, keep_logging, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    with pytest.raises(SystemExit, match="^fourdvarnet simulate: interrupted$"):
        main(["--config", str(config_file), "simulate", "--system", "l63", "--out-dir", "d"])


def test_default_config_from_another_directory(config_file, tmp_path, monkeypatch, keep_logging):
    """Outside the repository the CLI reads the config.yaml of the repository it was installed
    from; a ./config.yaml comes first."""
    repo = Path(__file__).resolve().parents[1]
    if Path(cli.__file__).resolve().parent != repo / "src" / "fourdvarnet":
        pytest.skip("fourdvarnet is not installed from this checkout (pip install -e .)")
    assert cli.REPO_CONFIG == repo / "config.yaml" and cli.REPO_CONFIG.is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.find_config(None) == cli.REPO_CONFIG
    monkeypatch.setattr(cli, "REPO_CONFIG", config_file)  # the tiny one, to run a stage
    main(["simulate", "--system", "l63", "--out-dir", "data"])
    assert xr.load_dataset(elsewhere / "data" / "l63_test.nc").attrs["seed"] == 4
    (elsewhere / "config.yaml").write_text("preset: x\n")
    assert cli.find_config(None) == Path("config.yaml")


def test_no_config_exits_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "REPO_CONFIG", tmp_path / "repo" / "config.yaml")
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--system", "l63", "--out-dir", "d"])
    msg = str(e.value.code)
    assert "\n" not in msg and "--config PATH" in msg
    assert str(tmp_path / "config.yaml") in msg and str(tmp_path / "repo" / "config.yaml") in msg
    # the console script: that line on stderr, no traceback
    script = Path(sys.executable).parent / "fourdvarnet"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    run = subprocess.run(
        [str(script), "--config", "missing.yaml", "train", "--system", "l63", "--row", "x"]
        + ["--data-dir", ".", "--out", "m.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"fourdvarnet: error: no config file found (tried {tmp_path / 'missing.yaml'}); "
        "use --config PATH"
    ]


def test_threads_default_to_one(config_file, tmp_path, keep_logging, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "default: 1" in " ".join(capsys.readouterr().out.split())
    before = torch.get_num_threads()
    common = ["--config", str(config_file), "simulate", "--system", "l63"]
    try:
        torch.set_num_threads(2)
        main([*common, "--out-dir", str(tmp_path / "a")])
        assert torch.get_num_threads() == 1
        main(["--threads", "2", *common, "--out-dir", str(tmp_path / "b")])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["--threads", "0", *common, "--out-dir", str(tmp_path / "c")])


def test_figures_stage(config_file, tmp_path, l63_files, keep_logging, capsys):
    """``figures`` draws a figure from the evaluation files of the rows of ``figures.<fig>``,
    found as the workflow lays them out: <evals-dir>/<system>/<row>/seed<seed>.nc."""
    common = ["--config", str(config_file), "--log", str(tmp_path / "log.txt")]
    evals = tmp_path / "eval"
    for row in ("none-rk4-fsgd", "none-rk4-fixed_point"):
        main(
            [*common, "evaluate", "--system", "l63", "--row", row]
            + ["--data-dir", str(l63_files["test"].parent)]
            + ["--out", str(evals / "l63" / row / "seed0.nc")]
            + ["--scores", str(evals / "l63" / row / "seed0.json")]
        )
    out = tmp_path / "figs"
    fig = ["figures", "--figure", "fig2", "--evals-dir", str(evals), "--out-dir", str(out)]
    main([*common, *fig])
    assert (out / "fig2.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "fig2.png").read_bytes().startswith(b"\x89PNG")
    assert f"wrote {out / 'fig2.pdf'}" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # no evaluation of seed 1: the missing files are named
        main([*common, *fig, "--seed", "1"])
    err = capsys.readouterr().err
    assert str(evals / "l63" / "none-rk4-fsgd" / "seed1.nc") in err and "'fixed point'" in err
    with pytest.raises(SystemExit):  # the config has no figures.fig3 rows
        main([*common, *fig[:2], "fig3", *fig[3:]])
    assert "no rows under figures.fig3" in capsys.readouterr().err


def test_set_overrides_a_value_after_the_preset_and_evaluate_scores_the_val_split(
    config_file, tmp_path, keep_logging
):
    cfg = load_config(config_file, None, ["data.l63.seed=9", "evaluate.l63.fsgd.n_iter=7"])
    assert cfg["data"]["l63"]["seed"] == 9  # over the preset's 4
    assert cfg["evaluate"]["l63"]["fsgd"]["n_iter"] == 7
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        load_config(config_file, None, ["evaluate.l63.fsgd.n_iter"])
    data = tmp_path / "data"
    main(["--config", str(config_file), "simulate", "--system", "l63", "--out-dir", str(data)])
    out, scores = tmp_path / "val.nc", tmp_path / "val.json"
    main([
        "--config", str(config_file), "--set", "evaluate.l63.fsgd.n_iter=7", "evaluate",
        "--system", "l63", "--row", "none-rk4-fsgd", "--data-dir", str(data), "--split", "val",
        "--out", str(out), "--scores", str(scores),
    ])  # fmt: skip
    assert json.loads(scores.read_text())["n_iter"] == 7
    with xr.open_dataset(out) as ds, xr.open_dataset(data / "l63_val.nc") as val:
        assert ds.sizes["sample"] == val.sizes["sample"] == 16
        assert ds.iteration.values[-1] == 7
        assert abs(ds.x.values - val.x.values).max() < 1e-4  # the val windows, decoded
