"""The pipeline stages as plain functions of file paths and config sub-trees.

The Snakemake scripts and the command line both call these, so each stage runs, and is tested,
without Snakemake. Every output is written atomically: a killed job leaves no file that looks
complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .config import (
    DataConfig,
    EvalConfig,
    Experiment,
    ModelConfig,
    from_dict,
    train_config,
)
from .data import Normalizer, data_setup, load_split, make_splits, read_torch, write_netcdf
from .evaluate import evaluate
from .model import build_model, load_checkpoint, save_atomic, save_checkpoint
from .priors import build_prior
from .rows import divergence_cause, kind_of, needs_training_states, pretrains_prior, scheme_of
from .training import pick_device, pretrain_genn_prior, seed_everything, train

log = logging.getLogger("fourdvarnet")


def setup_logging(path: str | Path | None = None, also_stderr: bool = False, tag: str = "") -> None:
    """Log one timestamped line per message to ``path`` when given (a job's log), else stderr.

    With ``also_stderr`` the messages go to both: the file as without it, stderr (the console
    of a local Snakemake run) as short lines starting with ``tag`` (e.g. the job's name).
    """
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handlers: list[logging.Handler] = []
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
        handlers[-1].setFormatter(logging.Formatter(fmt))
    if also_stderr or not path:
        console = logging.StreamHandler(sys.stderr)
        short = f"%(asctime)s {tag}: %(message)s" if tag else "%(asctime)s %(message)s"
        console.setFormatter(logging.Formatter(short if path else fmt, datefmt="%H:%M:%S"))
        handlers.append(console)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


@contextlib.contextmanager
def job_log(
    path: str | Path | None = None, also_stderr: bool = False, tag: str = "", errors: str = "job"
):
    """``setup_logging``, then run the block. ``errors`` says what an uncaught exception does:

    * ``job`` (a Snakemake job): written to the log with its traceback (Snakemake shows it on
      the console) and raised again; but an unreadable input (``data.UnreadableFileError``) with
      a log file ends the job (status 1) with its message alone on stderr, the traceback in the
      log file only, and an interrupt (Ctrl-C) ends it with one line (status 130);
    * ``caller``: the traceback in the log file only, raised again for a caller that prints the
      message itself (the command line);
    * ``raise``: written to the log (and the console) with its traceback, raised again
      (the command line's ``--debug``).

        with job_log(snakemake.log[0]):
            train_row(...)
    """
    from .data import UnreadableFileError

    setup_logging(path, also_stderr=also_stderr, tag=tag)
    try:
        yield
    except SystemExit as e:
        if e.code not in (None, 0):
            log.error("exited with status %s", e.code)
        raise
    except (UnreadableFileError, KeyboardInterrupt) as e:
        if errors == "caller":
            _log_to_files(e)
            raise
        if errors == "raise" or not path:  # no log file to keep the traceback in
            log.exception("failed: %s: %s", type(e).__name__, e)
            raise
        # A damaged input: its message (the file, what is wrong, the command that rebuilds it)
        # once on the console, the traceback in the log file only; exit 1 without a traceback.
        # An interrupt: one line, exit 130.
        _log_to_files(e)
        if isinstance(e, KeyboardInterrupt):
            print(f"{tag or 'job'}: interrupted", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        print(f"{tag or 'ERROR'}: {e} (traceback in {path})", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except BaseException as e:
        if errors == "caller":
            _log_to_files(e)
        else:
            log.exception("failed: %s: %s", type(e).__name__, e)
        raise


def _log_to_files(e: BaseException) -> None:
    """The error with its traceback, in the log files only (not on the console)."""
    args = ("failed: %s: %s", (type(e).__name__, e), sys.exc_info())
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, *args)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
    log.info("torch uses %d CPU thread(s)", torch.get_num_threads())


def parse_row(row: str, system: str, seed: int = 0) -> Experiment:
    """``'supervised-genn-conv'`` -> Experiment, checked (``supervised-none-direct``: the
    direct CNN, the only row with prior ``none`` or solver ``direct``)."""
    parts = row.split("-")
    if len(parts) != 3:
        raise ValueError(f"row {row!r} must read scheme-prior-solver, e.g. 'supervised-genn-conv'")
    exp = Experiment(system, *parts, seed=int(seed))
    kind_of(exp, f"row {row!r}")
    return exp


def simulate(data_cfg: dict, outputs: dict[str, str | Path]) -> None:
    """Generate the truth and the observations of every split, one NetCDF file per split."""
    cfg = from_dict(DataConfig, data_cfg, f"data.{data_cfg.get('system', '?')}")
    log.info("simulating %s: %d steps of dt=%g", cfg.system, cfg.n_steps, cfg.dt)
    for split, ds in make_splits(cfg).items():
        write_netcdf(ds, outputs[split])
        log.info("wrote %s (%d windows)", outputs[split], ds.sizes["sample"])


def load_normalised(path):
    """A split file as normalised tensors, its normaliser and the never-observed fill values."""
    split = load_split(path)
    norm = Normalizer.from_attrs(split.attrs)
    fill = (
        np.asarray(split.attrs["train_component_mean"], dtype=np.float32) - norm.mean
    ) / norm.std
    return norm.encode(split), norm, torch.as_tensor(fill)


def pretrain_genn(
    system: str,
    seed: int,
    train_path,
    val_path,
    model_cfg: dict,
    train_cfg: dict,
    output: str | Path,
    threads: int | None = None,
) -> dict:
    """Pre-train the GENN prior of ``system`` and ``seed`` on one-step prediction and write its
    weights: every GENN row of that seed starts from them (``train_row(pretrained=...)``).

    The prior is initialised as inside a row's model (the global generator seeded with
    ``seed``, the prior built first) and fitted by ``training.pretrain_genn_prior`` with
    ``train.<system>``'s ``pretrain_*`` values and ``batch_size``, its batches drawn from a
    generator seeded with ``seed``, the validation split read by the plateau rule and scored
    (``val_ode_score``, physical units). Returns the pre-training record (also in the file).
    """
    mcfg = from_dict(ModelConfig, model_cfg, f"model.{system}")
    tcfg = train_config(train_cfg, f"train.{system}")
    set_threads(threads)
    device = pick_device(tcfg.device)
    seed_everything(seed)
    train_set, norm, _ = load_normalised(train_path)
    val_set, _, _ = load_normalised(val_path)
    dt = float(train_set.attrs["dt"])
    prior = build_prior("genn", system, dt, norm.mean, norm.std, mcfg).to(device)
    log.info("pre-training the %s GENN prior, seed %d, on %s", system, seed, device)
    record = pretrain_genn_prior(
        prior, tcfg, train_set.to(device).x, val_set.to(device).x, seed, norm.std
    )
    state = {k: v.detach().cpu() for k, v in prior.state_dict().items()}
    save_atomic(
        {"state_dict": state, "genn": dataclasses.asdict(mcfg.genn), "history": record}, output
    )
    log.info("wrote %s", output)
    return record


def load_pretrained(model, path, genn_cfg) -> dict:
    """Load a ``pretrain_genn`` file into ``model``'s prior (refusing one of another GENN);
    returns its pre-training record."""
    saved = read_torch(path, f"pre-trained prior {path}", "the workflow's `pretrain_genn` rule")
    if saved["genn"] != dataclasses.asdict(genn_cfg):
        raise ValueError(
            f"{path} holds a GENN of {saved['genn']}, not of model.genn {genn_cfg}: delete it "
            "and run again"
        )
    if not isinstance(saved["history"], dict):
        raise ValueError(
            f"{path} is a pre-trained prior of an older version (no validation record): delete "
            "it and run again"
        )
    model.prior.load_state_dict(saved["state_dict"])
    return saved["history"]


def train_row(
    row: str,
    system: str,
    seed: int,
    train_path,
    val_path,
    model_cfg: dict,
    train_cfg: dict,
    checkpoint: str | Path,
    threads: int | None = None,
    pretrained: str | Path | None = None,
) -> dict:
    """Train one learned table row and write its checkpoint (weights, config, metrics).

    ``pretrained``: a GENN row's prior from ``pretrain_genn`` (else the row pre-trains its own).
    """
    exp = parse_row(row, system, seed)
    scheme = scheme_of(exp)
    if pretrained and not pretrains_prior(exp):
        raise ValueError(f"row {row!r} has no GENN prior to take pre-trained weights")
    mcfg = from_dict(ModelConfig, model_cfg, f"model.{system}")
    tcfg = train_config(train_cfg, f"train.{system}")
    set_threads(threads)
    device = pick_device(tcfg.device)
    log.info("training %s on %s", exp.name, device)
    seed_everything(exp.seed)
    train_set, norm, fill = load_normalised(train_path)
    val_set, _, _ = load_normalised(val_path)
    dt = float(train_set.attrs["dt"])
    model = build_model(
        exp,
        dt,
        norm,
        fill,
        mcfg,
        getattr(tcfg, scheme.lambdas),
        learn_lambdas=scheme.learns_cost and tcfg.learn_lambdas,
        lambda_param=tcfg.lambda_param,
    )
    pretrain = load_pretrained(model, pretrained, mcfg.genn) if pretrained else None
    model.to(device)
    resume = Path(f"{checkpoint}.resume")  # the last completed epoch, if the job is killed
    record = train(
        model, exp, tcfg, train_set.to(device), val_set.to(device), std=norm.std, resume=resume,
        pretrained=pretrain,
    )  # fmt: skip
    save_checkpoint(
        checkpoint,
        model,
        exp,
        mcfg,
        train_set.attrs,
        {"train_record": record, "train_config": train_cfg, "device": str(device)},
    )
    resume.unlink(missing_ok=True)
    log.info("wrote %s", checkpoint)
    return record


def evaluate_row(
    row: str,
    system: str,
    seed: int,
    test_path,
    model_cfg: dict,
    eval_cfg: dict,
    output: str | Path,
    scores_path: str | Path,
    checkpoint=None,
    threads: int | None = None,
    run: str = "",
    train_path=None,
    preset: str = "",
) -> dict:
    """Score one table row on the test split; writes the reconstructions and the scores, with
    the data set-up (``data.data_setup``) and the name of the run (``run``: a named variant,
    '' for the default run) that the tables and figures check before they combine rows, and
    the name of the ``preset``.

    ``train_path``: the training split, read only by the rows that need its truth (the EnKS with
    ``enks.init: states`` draws its initial members from it)."""
    exp = parse_row(row, system, seed)
    ecfg = from_dict(EvalConfig, eval_cfg, f"evaluate.{system}")
    set_threads(threads)
    device = pick_device(ecfg.device)
    seed_everything(exp.seed)
    test, norm, fill = load_normalised(test_path)
    dt = float(test.attrs["dt"])
    extra = {}
    if not kind_of(exp).trained:
        if checkpoint:
            raise ValueError(f"row {row!r} is not learned and takes no checkpoint")
        mcfg = from_dict(ModelConfig, model_cfg, f"model.{system}")
        train_x = None
        if needs_training_states(exp, ecfg):
            if train_path is None:
                raise ValueError(
                    f"row {row!r} with evaluate.{system}.enks.init = states needs the training "
                    "split (train_path)"
                )
            train_x = load_split(train_path).x
        model = build_model(
            exp, dt, norm, fill, mcfg, kind_of(exp).weights(exp, ecfg), fsgd_step=ecfg.fsgd.step,
            fsgd_fraction=ecfg.fsgd.step_fraction, evaluate=ecfg, attrs=test.attrs,
            train_x=train_x,
        )  # fmt: skip
    else:
        if not checkpoint:
            raise ValueError(f"row {row!r} is learned: evaluation needs its checkpoint")
        model, ckpt = load_checkpoint(checkpoint)
        stored = Experiment(**ckpt["experiment"])
        if dataclasses.replace(stored, seed=exp.seed) != exp:
            raise ValueError(f"checkpoint {checkpoint} holds {stored.name}, not {exp.name}")
        record = ckpt["train_record"]
        extra = {"val_r_score": record["val_r_score"], "best_epoch": record["best_epoch"]}
        if "seconds" in record:  # wall time of the training job (pre-training included)
            extra["train_seconds"] = record["seconds"]
    log.info("evaluating %s on %s", exp.name, device)
    setup = data_setup(test.attrs)
    attrs = {"checkpoint": str(checkpoint or ""), "run": run, "data_setup": json.dumps(setup)}
    ds, scores = evaluate(model, exp, test, norm, dt, ecfg, device, {**attrs, **extra})
    scores.update(
        extra,
        experiment=exp.name,
        system=system,
        scheme=exp.scheme,
        prior=exp.prior,
        solver=exp.solver,
        seed=exp.seed,
        device=str(device),
        preset=preset,
        run=run,
        setup=setup,
    )
    check_scores(scores, row)
    # per window, in the order of the split, for the tables' intervals (intervals.py)
    scores["window"] = int(test.attrs["window"])
    scores["window_r_score"] = [float(f"{v:.6g}") for v in ds["window_r_score"].values]
    if test.start is not None:
        scores["window_start"] = [int(v) for v in test.start]
    write_netcdf(ds, output)
    _write_json(scores, scores_path)
    return scores


def _write_json(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class ScoreError(ValueError):
    """A score of a table row is not a finite number: the row's run diverged."""


def check_scores(scores: dict, row: str) -> None:
    """Refuse non-finite scores (NaN, inf) before anything is written, naming the row, the
    scores and the likely cause, so that a diverged run never reaches a table."""
    bad = {
        k: v
        for k, v in scores.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not np.isfinite(v)
    }
    if not bad:
        return
    system = scores.get("system", "<system>")
    solver = scores.get("solver") or row.rsplit("-", 1)[-1]
    cause = divergence_cause(solver, system)
    shown = ", ".join(f"{k}={v}" for k, v in bad.items())
    raise ScoreError(f"row {row!r} ({system}): non-finite score(s) {shown}. Likely cause: {cause}.")
