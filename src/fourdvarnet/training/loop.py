"""Training of one table row (paper Section 3.4).

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
import time
from pathlib import Path

import torch
from torch import nn

from ..config import Experiment, TrainConfig
from ..cost import prior_term
from ..data import Split
from ..model import FourDVarNet
from ..rows import SCHEMES, kind_of, learns_prior, pretrains_prior
from .optim import Schedule, parameter_groups, set_lr
from .resume import load_resume, resume_key, save_resume
from .steps import make_runner

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite."""


class TrainingCollapsed(RuntimeError):
    """The trained network's reconstructions are constant in time on the validation split."""


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


@torch.no_grad()
def one_step_loss(prior: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> float:
    """The mean one-step prediction loss |x - Phi(x)|^2 of ``prior`` on ``x`` (normalised)."""
    total = 0.0
    for idx in batches(len(x), batch_size, None):
        total += float(prior_term(x[idx], prior).sum())
    return total / len(x)


def pretrain_prior(
    prior: nn.Module,
    x: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    val: torch.Tensor | None = None,
    patience: int = 0,
    tol: float = 0.0,
    drops: int = 0,
    max_seconds: float = 0.0,
    std: float = 1.0,
) -> dict:
    """Fit ``prior`` to the truth ``x`` by one-step prediction, loss |x - Phi(x)|^2, batches
    drawn by ``gen``; returns the pre-training record.

    ``patience`` 0 (the paper's recipe): ``epochs`` epochs at rate ``lr``, the last weights
    kept. ``patience`` > 0, the plateau rule (``val`` needed): after each epoch the one-step
    loss on the validation windows ``val``; the best-validation weights are kept, and when
    that loss has not improved by the fraction ``tol`` for ``patience`` epochs, the rate is
    divided by 10, at most ``drops`` times: the next such plateau stops the pre-training.
    ``epochs`` caps the epochs and ``max_seconds`` (0: none) the time either way.

    The record: per-epoch training and validation losses and rates (normalised units), the
    epochs run, the best epoch, the seconds, why it stopped, and ``val_ode_score``, the kept
    weights' validation one-step loss in physical units (times ``std**2``, as the ODE-score of
    ``metrics``).
    """
    if patience and val is None:
        raise ValueError("the plateau rule (patience > 0) needs the validation windows")
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    rec: dict = {"loss": [], "val_loss": [], "lr": [], "stopped": ""}
    best, best_epoch, best_state = math.inf, -1, None
    wait = dropped = 0
    started = time.perf_counter()
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
        rec["loss"].append(float(losses.sum()) / len(x))
        rec["lr"].append(opt.param_groups[0]["lr"])
        val_loss = one_step_loss(prior, val) if val is not None else math.nan
        rec["val_loss"].append(val_loss)
        log.info(
            "pretrain epoch %d/%d lr %.0e: one-step loss %.4g, validation %.4g (ODE-score %.3g)",
            epoch + 1, epochs, rec["lr"][-1], rec["loss"][-1], val_loss, val_loss * std**2,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if patience:
            if val_loss < best * (1 - tol):
                best, best_epoch, wait = val_loss, epoch, 0
                best_state = copy.deepcopy(prior.state_dict())
            else:
                wait += 1
            if wait >= patience:
                if dropped >= drops:
                    rec["stopped"] = (
                        f"validation loss better by less than {tol:g} for {patience} epochs "
                        f"after {dropped} rate drops"
                    )
                    break
                dropped, wait = dropped + 1, 0
                for group in opt.param_groups:
                    group["lr"] /= 10
                log.info("pretrain: validation plateau, rate divided by 10")
        if max_seconds and seconds >= max_seconds and epoch + 1 < epochs:
            rec["stopped"] = f"time budget of {max_seconds:g} s spent ({seconds:.0f} s)"
            break
    if best_state is not None:
        prior.load_state_dict(best_state)
    else:
        best_epoch = len(rec["loss"]) - 1
        best = rec["val_loss"][-1] if rec["val_loss"] else math.nan
    rec.update(
        epochs=len(rec["loss"]),
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        val_ode_score=best * std**2,
    )
    if rec["stopped"]:
        log.info("pretrain stopped after epoch %d: %s", rec["epochs"], rec["stopped"])
    log.info(
        "pre-trained prior (epoch %d of %d, %.0f s): validation ODE-score %.3g",
        best_epoch + 1, rec["epochs"], rec["seconds"], rec["val_ode_score"],
    )  # fmt: skip
    return rec


def pretrain_genn_prior(
    prior: nn.Module, cfg: TrainConfig, x: torch.Tensor, val: torch.Tensor, seed: int, std: float
) -> dict:
    """Pre-train a GENN prior with ``train.<system>``'s pre-training values (``pretrain_*``,
    ``batch_size``), its batches drawn from its own generator seeded with ``seed``: the one
    procedure of the workflow's shared pre-training (``pipeline.pretrain_genn``) and of a row
    that pre-trains its own prior, so that both give the same prior and batch order."""
    return pretrain_prior(
        prior, x, cfg.pretrain_epochs, cfg.pretrain_lr, cfg.batch_size,
        torch.Generator().manual_seed(seed), val=val, patience=cfg.pretrain_patience,
        tol=cfg.pretrain_tol, drops=cfg.pretrain_drops, max_seconds=cfg.pretrain_max_seconds,
        std=std,
    )  # fmt: skip


def check_finite(losses: torch.Tensor, where: str) -> None:
    """Raise naming the first batch whose loss is not finite (one host sync per call)."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise TrainingDiverged(
            f"non-finite training loss ({float(losses[b])}) at {where}, batch {b}"
        )


def training_loss(model: FourDVarNet, scheme: str, x_hat, x, y, mask, prior_weight: float):
    """The loss of learning scheme ``scheme`` (``rows.SCHEMES``)."""
    return SCHEMES[scheme].loss(model, x_hat, x, y, mask, prior_weight)


@torch.no_grad()
def validate(
    model: FourDVarNet, scheme: str, val: Split, n_iter: int, batch_size: int, solve=None
) -> dict[str, float]:
    """Validation R-score and cost (normalised units), with the solver run ``n_iter`` times,
    and ``val_tvar``: the reconstructions' variance in time over the truth's (0: collapsed).

    ``solve(y, mask, n_iter)`` replaces ``model(y, mask, n_iter)`` (the fast path).
    """
    model.eval()
    solve = solve or model
    r = u = var_hat = var_true = 0.0
    for idx in batches(len(val), batch_size, None):
        b = val.subset(idx)
        x_hat = solve(b.y, b.mask, n_iter)
        r += float(((x_hat - b.x) ** 2).mean(dim=(1, 2)).sum())
        u += float(model.cost(x_hat, b.y, b.mask).sum())
        var_hat += float(x_hat.var(dim=-1).sum())
        var_true += float(b.x.var(dim=-1).sum())
    model.train()
    out = {"val_r": r / len(val), "val_u": u / len(val), "val_tvar": var_hat / var_true}
    out["val_metric"] = out[SCHEMES[scheme].select_on]
    return out


def flattened(metrics: list[float], tol: float) -> bool:
    """Whether the best of ``metrics`` (lower is better) improved by less than the fraction
    ``tol`` over the last quarter of them (from 4 values on)."""
    if len(metrics) < 4:
        return False
    early = min(metrics[: len(metrics) - len(metrics) // 4])
    return min(metrics) > early * (1 - tol)


#: ``flat_stop`` fires from this many epochs on, and not before the last rate stage has run
#: 4 epochs (``flattened`` over that stage alone): a plateau at a larger rate is not the end
FLAT_MIN_EPOCHS = 10


def last_rate_epoch(cfg: TrainConfig) -> int:
    """The first epoch of the schedule's last rate stage (where its learning rate last
    changes; 0 for a constant rate)."""
    start, lr = 0, cfg.schedule[0].lr
    for stage in cfg.schedule[1:]:
        if stage.lr != lr:
            start, lr = stage.epoch, stage.lr
    return start


def stop_reason(cfg: TrainConfig, history: list[dict], seconds: float) -> str:
    """Why a training stops before its last epoch ('' to go on): the time budget
    ``max_seconds`` spent, or the validation metric flattened (``flat_stop``) within the
    schedule's last rate stage, after at least ``FLAT_MIN_EPOCHS`` epochs (``history``: every
    epoch from the first on)."""
    if cfg.max_seconds and seconds >= cfg.max_seconds:
        return f"time budget of {cfg.max_seconds:g} s spent ({seconds:.0f} s)"
    last_stage = [h["val_metric"] for h in history[last_rate_epoch(cfg) :]]
    if cfg.flat_stop and len(history) >= FLAT_MIN_EPOCHS and flattened(last_stage, cfg.flat_stop):
        return (
            f"validation metric better by less than {cfg.flat_stop:.0%} over the last quarter "
            "of the last rate stage"
        )
    return ""


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in an epoch of equal-size batches (``batches(..., drop_last=True)``)."""
    return n // batch_size if n > batch_size else 1


class Best:
    """The best validation metric so far, its epoch and the weights that reached it."""

    def __init__(self, model: nn.Module):
        self.model, self.metric, self.epoch = model, math.inf, -1
        self.state = copy.deepcopy(model.state_dict())

    def update(self, metric: float, epoch: int) -> None:
        if metric < self.metric:
            self.metric, self.epoch = metric, epoch
            self.state = copy.deepcopy(self.model.state_dict())


class Training:
    """The state of one row's training: the model, its runner and schedule, the data, the
    generator of the batch order, the best weights and the record; one method per part of an
    epoch. ``train`` drives it."""

    def __init__(self, model, exp, cfg, train_set, val_set, std, fast, resume, pretrained):
        self.model, self.exp, self.cfg, self.std = model, exp, cfg, std
        self.train_set, self.val_set, self.resume = train_set, val_set, resume
        kind = kind_of(exp)
        self.gen = torch.Generator().manual_seed(exp.seed)
        self.started = time.perf_counter()
        self.key = resume_key(exp, cfg, len(train_set))
        saved = load_resume(resume, self.key)
        self.record: dict = {"history": [], "pretrain": dict(pretrained or {})}
        if saved is None and pretrained is None and pretrains_prior(exp) and cfg.pretrain_epochs:
            # as the workflow's shared pre-training (pipeline.pretrain_genn): its own generator,
            # so the row's batch order (self.gen) is the same either way
            self.record["pretrain"] = pretrain_genn_prior(
                model.prior, cfg, train_set.x, val_set.x, exp.seed, std
            )
        if not learns_prior(exp, cfg):
            model.prior.requires_grad_(False)
        self.groups = parameter_groups(model, exp, cfg)
        self.schedule = Schedule(
            cfg, steps_per_epoch(len(train_set), cfg.batch_size), one_pass=kind.one_pass
        )
        self.runner = make_runner(
            model, self.groups, cfg.schedule[0].lr, train_set.x.device, fast, cfg.clip_grad_norm
        )
        self.record["fast_path"] = self.runner.name
        log.info("fast path: %s", self.runner.name)
        self.best = Best(model)
        self.first_epoch = 0 if saved is None else self.restore(saved)
        # the direct row has no prior, so no prior term whatever prior_weight says
        self.prior_weight = cfg.prior_weight if kind.uses_prior else 0.0

    def restore(self, saved: dict) -> int:
        """Take up a resume file's state; returns the first epoch still to run."""
        self.model.load_state_dict(saved["model"])
        self.runner.opt.load_state_dict(saved["optimizer"])
        self.gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.best.metric, self.best.epoch = saved["best"]["val_metric"], saved["best"]["epoch"]
        self.best.state, self.record = saved["best_state"], saved["record"]
        self.started -= saved["seconds"]
        return saved["epoch"] + 1

    def validation(self) -> dict[str, float]:
        batch = max(self.cfg.batch_size, 256)
        return validate(
            self.model, self.exp.scheme, self.val_set, self.cfg.val_n_iter, batch, self.runner.solve
        )

    def epoch(self, epoch: int) -> dict:
        """One pass over the shuffled training windows, one optimiser step per batch, then the
        validation scores; returns the epoch's history entry."""
        model, exp, cfg, schedule = self.model, self.exp, self.cfg, self.schedule
        n_iter = schedule.n_iter(epoch)

        def loss_fn(x, y, mask):
            x_hat = model(y, mask, n_iter, grad_last=cfg.backprop_iters)
            return training_loss(model, exp.scheme, x_hat, x, y, mask, self.prior_weight)

        t0, losses = time.perf_counter(), []
        for i, idx in enumerate(batches(len(self.train_set), cfg.batch_size, self.gen, True)):
            lr = schedule.lr(epoch, epoch * schedule.steps_per_epoch + i)
            set_lr(self.runner.opt, self.groups, lr)
            b = self.train_set.subset(idx)
            losses.append(self.runner.step(loss_fn, (b.x, b.y, b.mask), key=n_iter))
        losses = torch.stack(losses)
        check_finite(losses, f"epoch {epoch}")
        seconds = time.perf_counter() - t0
        entry = {
            "epoch": epoch,
            "steps": (epoch + 1) * schedule.steps_per_epoch,  # optimiser steps so far
            "n_iter": n_iter,
            "lr": lr,
            "loss": float(losses.mean()),
            "seconds": seconds,
            **self.validation(),
        }
        self.record["history"].append(entry)
        self.best.update(entry["val_metric"], epoch)
        return entry

    def log_epoch(self, e: dict) -> None:
        log.info(
            "epoch %d/%d iter %d lr %.0e loss %.4g val R-score %.4g val U %.4g (%.1fs)",
            e["epoch"] + 1, self.cfg.epochs, e["n_iter"], e["lr"], e["loss"],
            e["val_r"] * self.std**2, e["val_u"], e["seconds"],
        )  # fmt: skip

    def save(self, epoch: int) -> None:
        """The resume file after a completed epoch (with ``resume``)."""
        if self.resume is None:
            return
        save_resume(
            self.resume,
            {
                "key": self.key,
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.runner.opt.state_dict(),
                "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best": {"val_metric": self.best.metric, "epoch": self.best.epoch},
                "best_state": self.best.state,
                "record": self.record,
                "seconds": time.perf_counter() - self.started,
            },
        )

    def stop(self, epoch: int) -> bool:
        """Whether to stop after ``epoch`` before the last (``stop_reason``)."""
        reason = stop_reason(self.cfg, self.record["history"], time.perf_counter() - self.started)
        if reason:
            self.record["stopped"] = reason
            log.info("stopping after epoch %d: %s", epoch + 1, reason)
        return bool(reason)

    def finish(self) -> dict:
        """Keep the best weights, score them, refuse a collapsed network; the record."""
        self.model.load_state_dict(self.best.state)
        final = self.validation()
        if final["val_tvar"] < self.cfg.collapse_ratio:
            raise TrainingCollapsed(
                f"{self.exp.name}: the trained network's reconstructions are constant in time "
                f"on the validation split (variance in time {final['val_tvar']:.2g} of the "
                "truth's): a failed training; change its recipe (learning rate, batch size) or seed"
            )
        self.record.update(
            seconds=time.perf_counter() - self.started,
            best_epoch=self.best.epoch,
            val_r_score=final["val_r"] * self.std**2,
            val_u=final["val_u"],
            lambdas=self.model.cost.lambdas,
        )
        log.info(
            "best epoch %d: validation R-score %.4g",
            self.best.epoch + 1,
            final["val_r"] * self.std**2,
        )
        return self.record


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
    pretrained: dict | None = None,
) -> dict:
    """Train ``model`` in place for row ``exp``; leaves it holding the best validation weights.

    Returns the training record: per-epoch history, the best epoch and its validation metrics
    (R-scores in physical units through ``std``). With ``fast`` the steps run on the fastest
    runner of ``training.steps`` (CUDA graphs on a CUDA device; eager on the CPU).

    With ``resume`` (a path), the state after each completed epoch is written there
    (``training.resume``), and a training that finds such a file of the same row and config
    goes on from its last completed epoch. The file is left for the caller to remove.

    ``pretrained``: the pre-training record of a GENN prior already fitted (shared by the rows
    of a seed, ``pipeline.pretrain_genn``); without it a GENN row pre-trains its own prior, by
    the same procedure (``pretrain_genn_prior``).
    """
    t = Training(model, exp, cfg, train_set, val_set, std, fast, resume, pretrained)
    with t.runner.active():
        for epoch in range(t.first_epoch, cfg.epochs):
            entry = t.epoch(epoch)
            if progress:
                t.log_epoch(entry)
            t.save(epoch)
            if t.stop(epoch):
                break
        return t.finish()
