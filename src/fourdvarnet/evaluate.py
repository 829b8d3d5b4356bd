"""Evaluation of one table row on the test split: reconstructions, scores, energy pathway.

The reconstructions are written to NetCDF beside the truth, observations and mask (``x_hat``,
physical units), with the scores and the configuration in the attributes, so any score can be
recomputed from the file alone. The energy pathway (R-score and 4DVar-score after each recorded
solver iteration, Figures 2 and 4) is stored in the same file along an ``iteration`` dimension.
A solver that estimates its own uncertainty (the posterior mean of the Bayes row) also gives
``x_std``, the posterior standard deviation of each entry (physical units, the dims of ``x_hat``).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch

from . import __version__
from .config import EvalConfig, Experiment, as_dict
from .data import Normalizer, Split, git_commit, to_dataset
from .fast import FastSolve, graphs_available
from .metrics import Scorer
from .model import FourDVarNet
from .priors import true_prior
from .rows import kind_of
from .solvers import Solver
from .training import batches

log = logging.getLogger(__name__)

#: Long solves log their progress at most once every this many seconds.
PROGRESS_SECONDS = 60.0


def record_iterations(n_iter: int, log_spaced: bool, n_points: int = 60) -> np.ndarray:
    """Iterations at which the energy pathway is recorded (0 is the initial state)."""
    if not log_spaced:
        return np.arange(n_iter + 1)
    pts = np.unique(np.round(np.logspace(0, np.log10(max(n_iter, 1)), n_points)).astype(int))
    return np.concatenate([[0], pts[pts <= n_iter]])


class Pathway:
    """The energy pathway: the summed R-score and 4DVar-score of the reconstructions at the
    iterations ``record_at``, over every batch; ``progress`` logs a line at most once every
    ``PROGRESS_SECONDS``."""

    def __init__(self, record_at: np.ndarray, scorer: Scorer, n_iter: int, n_batches: int):
        self.position = {int(k): i for i, k in enumerate(record_at)}
        self.r, self.u = np.zeros(len(record_at)), np.zeros(len(record_at))
        self.scorer, self.n_iter, self.n_batches = scorer, n_iter, n_batches
        self.last_log = time.perf_counter()

    def callback(self, b: Split, j: int):
        """The solver's ``callback(k, x)`` for batch ``b`` (the ``j``-th)."""

        def record(k, x):
            if k not in self.position:
                return
            i = self.position[k]
            r = float(((x - b.x) ** 2).mean(dim=(1, 2)).sum())
            self.r[i] += r
            self.u[i] += float(self.scorer.fourdvar(x, b.y, b.mask).sum())
            if time.perf_counter() - self.last_log >= PROGRESS_SECONDS:
                self.last_log = time.perf_counter()
                log.info(
                    "batch %d/%d: iteration %d/%d, R-score %.4g",
                    j + 1, self.n_batches, k, self.n_iter, r / len(b) * self.scorer.std**2,
                )  # fmt: skip

        return record


def run_solver(
    model: FourDVarNet,
    test: Split,
    n_iter: int,
    batch_size: int,
    scorer: Scorer,
    record_at: np.ndarray,
    device: torch.device,
):
    """Solve every test batch; returns ``x_hat`` (normalised, CPU), the pathway means, the
    per-window FSGD steps (None for other solvers) and the posterior standard deviation of
    ``x_hat`` (normalised units, CPU) for a solver that gives one as ``last_std`` (else None).

    Long solves (the FSGD baseline's many thousand iterations) log their progress at recorded
    iterations, at most once every ``PROGRESS_SECONDS``. On CUDA the gradient-based solvers
    replay CUDA graphs; on the CPU they run eager.
    """
    model.to(device).eval()
    fast = graphs_available(device) and isinstance(model.solver, Solver)
    solve = FastSolve(model) if fast else model
    parts = batches(len(test), batch_size, None)
    pathway = Pathway(record_at, scorer, n_iter, len(parts))
    outs, steps, stds = [], [], []
    for j, idx in enumerate(parts):
        b = test.subset(idx).to(device)
        record = pathway.callback(b, j)
        with torch.no_grad():
            record(0, model.initial_state(b.y, b.mask))
            x_hat = solve(b.y, b.mask, n_iter, callback=record)
        scorer.add(x_hat, b.x, b.y, b.mask)
        outs.append(x_hat.cpu())
        if getattr(model.solver, "last_step", None) is not None:
            steps.append(model.solver.last_step.flatten().cpu())
        if getattr(model.solver, "last_std", None) is not None:
            stds.append(model.solver.last_std.cpu())
    steps = torch.cat(steps) if steps else None
    stds = torch.cat(stds) if stds else None
    return torch.cat(outs), pathway.r / len(test), pathway.u / len(test), steps, stds


def evaluate(
    model: FourDVarNet,
    exp: Experiment,
    test: Split,
    norm: Normalizer,
    dt: float,
    cfg: EvalConfig,
    device: torch.device,
    extra_attrs: dict | None = None,
):
    """Score ``model`` on the (normalised) test split; returns ``(dataset, scores)``."""
    kind = kind_of(exp)
    n_iter, batch_size = kind.budget(exp, cfg)
    scorer = Scorer(
        true_prior(exp.system, dt, norm.mean, norm.std).to(device),
        model.prior.to(device) if kind.uses_prior else None,  # the direct row: no prior
        norm.std,
        cfg.score_lambdas,
    )
    record_at = record_iterations(n_iter, log_spaced=n_iter > 100)
    t0 = time.perf_counter()
    x_hat, path_r, path_u, steps, x_std = run_solver(
        model, test, n_iter, batch_size, scorer, record_at, device
    )
    seconds = time.perf_counter() - t0
    scores = scorer.result()
    scores.update(n_iter=n_iter, seconds=seconds)
    window_r = ((x_hat - test.x.cpu()) ** 2).mean(dim=(1, 2)).double().numpy() * norm.std**2
    if steps is not None:  # FSGD: the per-window steps actually used
        scores.update(fsgd_step_median=float(steps.median()), fsgd_step_min=float(steps.min()))
    if hasattr(model.solver, "summary"):  # the posterior mean: ESS, MC error, expected R-score
        scores.update({f"bayes_{k}": v for k, v in model.solver.summary().items()})
    log.info("%s: %s", exp.name, ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    attrs = {
        **_provenance(exp, device),
        "scores": json.dumps(scores),
        "eval_config": json.dumps(as_dict(cfg)),
        "cost_lambdas": json.dumps(list(model.cost.lambdas)),
        "train_mean": norm.mean,
        "train_std": norm.std,
        **(extra_attrs or {}),
    }
    ds = _as_dataset(test, norm, dt, attrs, x_hat, x_std)
    ds["window_r_score"] = (
        "sample",
        window_r,
        {"long_name": "R-score of each window (its mean over windows is the row's R-score)"},
    )
    ds = ds.assign_coords(iteration=("iteration", record_at))
    ds["pathway_r_score"] = (
        "iteration",
        path_r * norm.std**2,
        {"long_name": "R-score after each recorded solver iteration"},
    )
    ds["pathway_fourdvar_score"] = (
        "iteration",
        path_u * norm.std**2,
        {"long_name": "4DVar-score after each recorded iteration"},
    )
    return ds, scores


def _provenance(exp: Experiment, device: torch.device) -> dict:
    """The row and where the evaluation ran, as dataset attributes."""
    return {
        "experiment": exp.name,
        "system": exp.system,
        "scheme": exp.scheme,
        "prior": exp.prior,
        "solver": exp.solver,
        "seed": exp.seed,
        "device": str(device),
        "torch_version": torch.__version__,
        "package_version": __version__,
        "git_commit": git_commit(),
    }


def _as_dataset(test: Split, norm: Normalizer, dt: float, attrs: dict, x_hat, x_std):
    """The split and its reconstructions (with their standard deviation where given) in
    physical units, as a dataset."""
    phys = lambda t: norm.decode(t).numpy().transpose(0, 2, 1)  # noqa: E731
    mask = test.mask.numpy().transpose(0, 2, 1)
    y = np.where(mask > 0, phys(test.y), np.nan)
    ds = to_dataset(phys(test.x), y, mask, dt, attrs, start=test.start, x_hat=phys(x_hat))
    ds["x_hat"].attrs["long_name"] = "reconstruction"
    if x_std is not None:
        ds["x_std"] = (
            ds["x_hat"].dims,
            (x_std * norm.std).numpy().transpose(0, 2, 1),
            {"long_name": "posterior standard deviation of x_hat", "units": "model units"},
        )
    return ds
