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

from . import __version__, fast_cpu
from .config import EvalConfig, Experiment, as_dict
from .data import Normalizer, Split, git_commit, to_dataset
from .fast import FastSolve, graphs_available
from .metrics import Scorer
from .model import FourDVarNet
from .priors import true_prior
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


def solve_budget(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    """Iterations and batch size of the solve that scores row ``exp``."""
    if exp.solver == "fsgd":
        return cfg.fsgd.n_iter, cfg.fsgd.batch_size
    if exp.solver == "lbfgs":
        return cfg.lbfgs.n_iter, cfg.lbfgs.batch_size
    if exp.solver == "fixed_point":
        return cfg.fixed_point_iter, cfg.batch_size
    if exp.solver == "enks":  # one pass, no iterations
        return 1, cfg.enks.batch_size
    if exp.solver == "bayes":  # one pass over the whole split (its diagnostics are per call)
        return 1, 1_000_000
    if exp.solver == "direct":  # one pass of the CNN
        return 1, cfg.batch_size
    return cfg.n_iter, cfg.batch_size


def run_solver(
    model: FourDVarNet,
    test: Split,
    n_iter: int,
    batch_size: int,
    scorer: Scorer,
    record_at: np.ndarray,
    device: torch.device,
    cpu_fast: str = "auto",
):
    """Solve every test batch; returns ``x_hat`` (normalised, CPU), the pathway means, the
    per-window FSGD steps (None for other solvers) and the posterior standard deviation of
    ``x_hat`` (normalised units, CPU) for a solver that gives one as ``last_std`` (else None).

    Long solves (the FSGD baseline's many thousand iterations) log their progress at recorded
    iterations, at most once every ``PROGRESS_SECONDS``. On CUDA the learned solvers replay
    CUDA graphs; on the CPU they take the compiled gradient of ``fast_cpu`` as ``cpu_fast``
    says (``auto``: at least ``fast_cpu.MIN_ITERATIONS`` batches x iterations, which one solve
    of a test split never reaches, so evaluation jobs stay eager unless asked).
    """
    model.to(device).eval()
    fast = graphs_available(device) and isinstance(model.solver, Solver)
    solve = FastSolve(model) if fast else model
    position = {int(k): i for i, k in enumerate(record_at)}
    path_r = np.zeros(len(record_at))
    path_u = np.zeros(len(record_at))
    outs, steps, stds = [], [], []
    parts = batches(len(test), batch_size, None)
    cpu = not fast and fast_cpu.wanted(cpu_fast, device, model, len(parts) * n_iter)
    if cpu:  # a short last batch padded to the compiled shape
        solve = fast_cpu.PaddedSolve(model)
    last_log = time.perf_counter()
    with fast_cpu.enabled(model, cpu):  # the eager gradient is back after it
        for j, idx in enumerate(parts):
            b = test.subset(idx).to(device)

            def record(k, x, b=b, j=j):
                nonlocal last_log
                if k in position:
                    i = position[k]
                    r = float(((x - b.x) ** 2).mean(dim=(1, 2)).sum())
                    path_r[i] += r
                    path_u[i] += float(scorer.fourdvar(x, b.y, b.mask).sum())
                    if time.perf_counter() - last_log >= PROGRESS_SECONDS:
                        last_log = time.perf_counter()
                        log.info(
                            "batch %d/%d: iteration %d/%d, R-score %.4g",
                            j + 1, len(parts), k, n_iter, r / len(b) * scorer.std**2,
                        )  # fmt: skip

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
    return torch.cat(outs), path_r / len(test), path_u / len(test), steps, stds


def evaluate(
    model: FourDVarNet,
    exp: Experiment,
    test: Split,
    norm: Normalizer,
    dt: float,
    cfg: EvalConfig,
    device: torch.device,
    extra_attrs: dict | None = None,
    cpu_fast: str = "auto",
):
    """Score ``model`` on the (normalised) test split; returns ``(dataset, scores)``.

    ``cpu_fast``: the CPU fast path of the learned solvers (``run_solver``)."""
    exp.check()
    n_iter, batch_size = solve_budget(exp, cfg)
    scorer = Scorer(
        true_prior(exp.system, dt, norm.mean, norm.std).to(device),
        model.prior.to(device) if exp.prior != "none" else None,  # the direct row: no prior
        norm.std,
        cfg.score_lambdas,
    )
    record_at = record_iterations(n_iter, log_spaced=n_iter > 100)
    t0 = time.perf_counter()
    x_hat, path_r, path_u, steps, x_std = run_solver(
        model, test, n_iter, batch_size, scorer, record_at, device, cpu_fast
    )
    seconds = time.perf_counter() - t0
    scores = scorer.result()
    scores.update(n_iter=n_iter, seconds=seconds)
    if steps is not None:  # FSGD: the per-window steps actually used
        scores.update(fsgd_step_median=float(steps.median()), fsgd_step_min=float(steps.min()))
    if hasattr(model.solver, "summary"):  # the posterior mean: ESS, MC error, expected R-score
        scores.update({f"bayes_{k}": v for k, v in model.solver.summary().items()})
    log.info("%s: %s", exp.name, ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))

    phys = lambda t: norm.decode(t).numpy().transpose(0, 2, 1)  # noqa: E731
    y = np.where(test.mask.numpy().transpose(0, 2, 1) > 0, phys(test.y), np.nan)
    attrs = {
        "experiment": exp.name,
        "system": exp.system,
        "scheme": exp.scheme,
        "prior": exp.prior,
        "solver": exp.solver,
        "seed": exp.seed,
        "scores": json.dumps(scores),
        "eval_config": json.dumps(as_dict(cfg)),
        "cost_lambdas": json.dumps(list(model.cost.lambdas)),
        "train_mean": norm.mean,
        "train_std": norm.std,
        "device": str(device),
        "torch_version": torch.__version__,
        "package_version": __version__,
        "git_commit": git_commit(),
        **(extra_attrs or {}),
    }
    ds = to_dataset(
        phys(test.x), y, test.mask.numpy().transpose(0, 2, 1), dt, attrs, x_hat=phys(x_hat)
    )
    ds["x_hat"].attrs["long_name"] = "reconstruction"
    if x_std is not None:
        ds["x_std"] = (
            ds["x_hat"].dims,
            (x_std * norm.std).numpy().transpose(0, 2, 1),
            {"long_name": "posterior standard deviation of x_hat", "units": "model units"},
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
