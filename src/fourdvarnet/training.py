"""Training of one table row (paper Section 3.4, SPEC section 5).

* unsupervised: loss = U_Phi(x_hat, y, Omega) with fixed weights; only the solver learns (the
  prior is the true-parameter ODE, or a GENN pre-trained on one-step prediction and then frozen);
* supervised: loss = MSE(x_hat, x) + w (|x_hat - Phi(x_hat)|^2 + |x - Phi(x)|^2); solver, cost
  weights and a GENN prior learn jointly, the prior at a fraction of the solver's learning rate.
  An ODE prior (RK4, Euler) stays the true model, as in the paper's supervised RK4 rows, unless
  ``learn_ode`` asks for its parameters to learn too;
* the direct row (``supervised-none-direct``, x_hat = CNN(y, Omega)): loss = MSE(x_hat, x); it
  has no prior (no prior term, whatever ``prior_weight``) and runs one pass (the schedule's
  ``n_iter`` does not apply; its learning rates do).

The number of solver iterations and the learning rate follow a schedule of stages. After each
epoch the model is scored on the validation split with the test-time iteration count (R-score
for supervised rows, U_Phi for unsupervised ones, which never see the truth) and the best weights
are kept: model selection never looks at the test split.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from . import fast_cpu
from .config import Experiment, TrainConfig, as_dict
from .cost import prior_term
from .data import Split
from .fast import FastSolve, GraphedTrainStep, graphs_available
from .model import FourDVarNet
from .solvers import Solver

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite."""


def pick_device(pref: str = "auto") -> torch.device:
    """``cuda`` when asked for or available (``auto``), else ``cpu``; says which in the log."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
        if pref == "cpu":
            log.info("CUDA is not available: running on the CPU")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {pref!r} requested but CUDA is not available")
    return torch.device(pref)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (weight initialisation); data use their own generators."""
    torch.manual_seed(seed)


def batches(n: int, size: int, gen: torch.Generator | None, drop_last: bool = False):
    """Index batches of ``range(n)``, shuffled by ``gen`` (in order without it).

    With ``drop_last`` every batch has the same size (the rest of a shuffled epoch is left out;
    a set smaller than ``size`` is one batch), as CUDA graphs need static shapes.
    """
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    stop = n - n % size if drop_last and n > size else n
    return [order[i : min(i + size, stop)] for i in range(0, stop, size)]


def pretrain_prior(
    prior: nn.Module, x: torch.Tensor, epochs: int, lr: float, batch_size: int, gen: torch.Generator
) -> list[float]:
    """Fit ``prior`` to the truth by one-step prediction, loss |x - Phi(x)|^2; returns losses."""
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        losses = []
        for idx in batches(len(x), batch_size, gen):
            loss = prior_term(x[idx], prior).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach() * len(idx))
        losses = torch.stack(losses)
        check_finite(losses, f"prior pre-training epoch {epoch}")
        history.append(float(losses.sum()) / len(x))
        log.info("pretrain epoch %d/%d: one-step loss %.4g", epoch + 1, epochs, history[-1])
    return history


def check_finite(losses: torch.Tensor, where: str) -> None:
    """Raise naming the first batch whose loss is not finite (one host sync per call)."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise TrainingDiverged(
            f"non-finite training loss ({float(losses[b])}) at {where}, batch {b}"
        )


def training_loss(model: FourDVarNet, scheme: str, x_hat, x, y, mask, prior_weight: float):
    if scheme == "unsupervised":
        return model.cost(x_hat, y, mask).mean()
    mse = ((x_hat - x) ** 2).mean()
    if not prior_weight:
        return mse
    prior = model.prior
    return mse + prior_weight * (prior_term(x_hat, prior).mean() + prior_term(x, prior).mean())


@torch.no_grad()
def validate(
    model: FourDVarNet, scheme: str, val: Split, n_iter: int, batch_size: int, solve=None
) -> dict[str, float]:
    """Validation R-score and cost (normalised units), with the solver run ``n_iter`` times.

    ``solve(y, mask, n_iter)`` replaces ``model(y, mask, n_iter)`` (the fast path).
    """
    model.eval()
    solve = solve or model
    r = u = 0.0
    for idx in batches(len(val), batch_size, None):
        b = val.subset(idx)
        x_hat = solve(b.y, b.mask, n_iter)
        r += float(((x_hat - b.x) ** 2).mean(dim=(1, 2)).sum())
        u += float(model.cost(x_hat, b.y, b.mask).sum())
    model.train()
    out = {"val_r": r / len(val), "val_u": u / len(val)}
    out["val_metric"] = out["val_u"] if scheme == "unsupervised" else out["val_r"]
    return out


def stage_at(cfg: TrainConfig, epoch: int):
    return [s for s in cfg.schedule if s.epoch <= epoch][-1]


def solver_iterations(cfg: TrainConfig, n_train: int) -> int:
    """Solver iterations on a batch over a whole training (steps x the schedule's ``n_iter``),
    the size of the job by which ``cpu_fast: auto`` decides (``fast_cpu.MIN_ITERATIONS``)."""
    steps = max(n_train // cfg.batch_size, 1)  # equal-size batches (drop_last)
    return steps * sum(stage_at(cfg, epoch).n_iter for epoch in range(cfg.epochs))


def _resume_key(exp: Experiment, cfg: TrainConfig, n_train: int) -> dict:
    """What a resume file must match to be taken up: the row, its training config and data size."""
    return {"experiment": exp.name, "train": as_dict(cfg), "n_train": n_train}


def load_resume(path: str | Path | None, key: dict) -> dict | None:
    """The state saved by the last completed epoch of an interrupted training, or None (no file,
    or one written for another row or config, which is then ignored and overwritten)."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        log.warning("ignoring %s: written by a training of another row or config", path)
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"] + 1)
    return state


def save_resume(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous epoch's file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    model: FourDVarNet,
    exp: Experiment,
    cfg: TrainConfig,
    train_set: Split,
    val_set: Split,
    std: float = 1.0,
    progress: bool = True,
    fast: bool = True,
    resume: str | Path | None = None,
) -> dict:
    """Train ``model`` in place for row ``exp``; leaves it holding the best validation weights.

    Returns the training record: per-epoch history, the best epoch and its validation metrics
    (R-scores in physical units through ``std``). With ``fast`` on a CUDA device the training
    steps and the validation solves replay CUDA graphs (``fourdvarnet.fast``); on the CPU a
    learned solver takes the compiled gradient of ``fourdvarnet.fast_cpu`` where
    ``cfg.cpu_fast`` asks for it (``auto``: ODE priors, jobs of ``fast_cpu.MIN_ITERATIONS``).

    With ``resume`` (a path), the state after each completed epoch (weights, optimiser, random
    generators, best weights so far, history) is written there atomically, and a training that
    finds such a file of the same row and config goes on from its last completed epoch, to the
    same weights as an uninterrupted run (on the CPU). The file is left for the caller to remove.
    """
    exp.check()
    gen = torch.Generator().manual_seed(exp.seed)
    record: dict = {"history": [], "pretrain": []}
    started = time.perf_counter()
    key = _resume_key(exp, cfg, len(train_set))
    saved = load_resume(resume, key)
    if saved is None and exp.prior == "genn" and cfg.pretrain_epochs > 0:
        record["pretrain"] = pretrain_prior(
            model.prior, train_set.x, cfg.pretrain_epochs, cfg.pretrain_lr, cfg.batch_size, gen
        )
    learn_prior = exp.scheme == "supervised" and (
        exp.prior == "genn" or (exp.prior in ("rk4", "euler") and cfg.learn_ode)
    )
    if not learn_prior:
        model.prior.requires_grad_(False)
    prior_weight = cfg.prior_weight if exp.prior != "none" else 0.0  # the direct row: no prior
    one_pass = exp.solver == "direct"  # the schedule's n_iter does not apply to it
    groups = [{"params": list(model.solver.parameters()), "scale": 1.0}]
    if exp.scheme == "supervised":
        groups.append(
            {
                "params": [p for p in model.prior.parameters() if p.requires_grad],
                "scale": cfg.prior_lr_factor,
            }
        )
        groups.append(
            {
                "params": [p for p in (model.cost.a_obs, model.cost.a_prior) if p.requires_grad],
                "scale": 1.0,
            }
        )
    groups = [g for g in groups if g["params"]]
    device = train_set.x.device
    graphs = fast and graphs_available(device) and isinstance(model.solver, Solver)
    opt = torch.optim.Adam(
        [{"params": g["params"]} for g in groups], lr=cfg.schedule[0].lr, capturable=graphs
    )
    solve = FastSolve(model) if graphs else None
    iterations = solver_iterations(cfg, len(train_set))
    cpu = fast and not graphs and fast_cpu.wanted(cfg.cpu_fast, device, model, iterations)
    if cpu:  # validation batches padded to the compiled shape
        solve = fast_cpu.PaddedSolve(model)
    record["fast_path"] = "cuda_graphs" if graphs else "cpu_compiled" if cpu else "eager"
    log.info("fast path: %s", record["fast_path"])
    best = {"val_metric": math.inf, "epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    first_epoch = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        best, best_state, record = saved["best"], saved["best_state"], saved["record"]
        first_epoch = saved["epoch"] + 1
        started -= saved["seconds"]
    step, step_key = None, None
    val_batch = max(cfg.batch_size, 256)
    with fast_cpu.enabled(model, cpu):  # the eager gradient is back after it
        for epoch in range(first_epoch, cfg.epochs):
            stage = stage_at(cfg, epoch)
            n_iter = 1 if one_pass else stage.n_iter
            for group, spec in zip(opt.param_groups, groups):
                group["lr"] = stage.lr * spec["scale"]

            def loss_fn(x, y, mask, n_iter=n_iter):
                x_hat = model(y, mask, n_iter)
                return training_loss(model, exp.scheme, x_hat, x, y, mask, prior_weight)

            epoch_batches = batches(len(train_set), cfg.batch_size, gen, drop_last=True)
            if graphs and step_key != (n_iter, stage.lr):
                first = train_set.subset(epoch_batches[0])
                step = GraphedTrainStep(loss_fn, opt, (first.x, first.y, first.mask))
                step_key = (n_iter, stage.lr)
            t0, losses = time.perf_counter(), []
            for idx in epoch_batches:
                batch = train_set.subset(idx)
                if graphs:
                    loss = step(batch.x, batch.y, batch.mask)
                else:
                    loss = loss_fn(batch.x, batch.y, batch.mask)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                losses.append(loss.detach())
            losses = torch.stack(losses)
            check_finite(losses, f"epoch {epoch}")
            val = validate(model, exp.scheme, val_set, cfg.val_n_iter, val_batch, solve)
            entry = {
                "epoch": epoch,
                "n_iter": n_iter,
                "lr": stage.lr,
                "loss": float(losses.mean()),
                "seconds": time.perf_counter() - t0,
                **val,
            }
            record["history"].append(entry)
            if val["val_metric"] < best["val_metric"]:
                best = {"val_metric": val["val_metric"], "epoch": epoch}
                best_state = copy.deepcopy(model.state_dict())
            msg = (
                f"epoch {epoch + 1}/{cfg.epochs} iter {n_iter} lr {stage.lr:.0e} "
                f"loss {entry['loss']:.4g} val R-score {val['val_r'] * std**2:.4g} "
                f"val U {val['val_u']:.4g} ({entry['seconds']:.1f}s)"
            )
            if progress:
                log.info(msg)
            if resume is not None:
                save_resume(
                    resume,
                    {
                        "key": key,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "best": best,
                        "best_state": best_state,
                        "record": record,
                        "seconds": time.perf_counter() - started,
                    },
                )
        model.load_state_dict(best_state)
        final = validate(model, exp.scheme, val_set, cfg.val_n_iter, val_batch, solve)
    record.update(
        seconds=time.perf_counter() - started,
        best_epoch=best["epoch"],
        val_r_score=final["val_r"] * std**2,
        val_u=final["val_u"],
        lambdas=model.cost.lambdas,
    )
    log.info("best epoch %d: validation R-score %.4g", best["epoch"] + 1, record["val_r_score"])
    return record
