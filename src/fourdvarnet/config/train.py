"""``train.<system>``: the training of one table row and its schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import _check

#: ``train.<system>.decay``: the learning rate within each schedule stage: constant (``none``,
#: the paper's) or times a cosine from 1 down to ``min_lr_factor`` over the whole training.
DECAYS = ("none", "cosine")
#: ``train.<system>.lambda_param``: how the supervised rows learn the cost weights: ``sqrt``,
#: ``l1 = a1^2, l2 = a2^2`` (two parameters); ``log_ratio``, ``l1 = c e^(r/2), l2 = c e^(-r/2)``
#: with only ``r = log(l1 / l2)`` learned (the normalised-gradient solvers see only the ratio).
LAMBDA_PARAMS = ("sqrt", "log_ratio")


@dataclass
class Stage:
    """One stage of the training schedule, from ``epoch`` on."""

    epoch: int = 0
    n_iter: int = 5
    lr: float = 1e-3

    def check(self, where: str) -> None:
        _check(self.epoch >= 0, f"{where}.epoch", self.epoch, "must be >= 0")
        _check(
            isinstance(self.n_iter, int) and self.n_iter >= 1,
            f"{where}.n_iter",
            self.n_iter,
            "must be an integer >= 1",
        )
        _check(self.lr > 0, f"{where}.lr", self.lr, "must be positive")


@dataclass
class TrainConfig:
    """Training of one table row (paper Section 3.4)."""

    epochs: int = 500
    batch_size: int = 128
    # the paper's ramp of solver iterations, the rate stepped down from 1e-3 to 1e-5
    schedule: list[Stage] = field(
        default_factory=lambda: [
            Stage(0, 5, 1e-3),
            Stage(100, 10, 1e-3),
            Stage(200, 15, 1e-4),
            Stage(300, 20, 1e-4),
            Stage(400, 20, 1e-5),
        ]  # fmt: skip
    )
    prior_lr_factor: float = 0.5  # Phi learns at this fraction of the solver's rate
    prior_weight: float = 0.05  # supervised: weight of each prior term |x - Phi(x)|^2
    # unsupervised: fixed l1, l2; FSGD's and the 4DVar-score's (the authors trained with 0.1, 1)
    unsup_lambdas: list[float] = field(default_factory=lambda: [0.01, 1.0])
    # supervised: the initial l1, l2 (learned jointly when learn_lambdas, else fixed)
    sup_lambdas: list[float] = field(default_factory=lambda: [0.01, 1.0])
    learn_lambdas: bool = True  # supervised: l1, l2 learned jointly
    learn_ode: bool = False  # supervised RK4/Euler rows: learn the ODE parameters jointly
    pretrain_epochs: int = 20  # GENN pre-training on one-step prediction
    pretrain_lr: float = 1e-3
    # the plateau rule of the GENN pre-training (0: off, the paper's fixed pretrain_epochs):
    # the best-validation weights kept, the rate divided by 10 when the validation one-step loss
    # has not improved by the fraction pretrain_tol for pretrain_patience epochs, stopped at
    # the plateau after pretrain_drops such drops; pretrain_epochs and pretrain_max_seconds
    # (0: none) cap it
    pretrain_patience: int = 0
    pretrain_tol: float = 1e-3
    pretrain_drops: int = 2
    pretrain_max_seconds: float = 0.0
    val_n_iter: int = 20  # solver iterations when scoring the validation split
    device: str = "auto"
    # recipe options beyond the paper (off by default, README "Training recipe")
    warmup_steps: int = 0  # the rate ramped linearly from 0 over the first optimiser steps
    decay: str = "none"  # one of DECAYS
    min_lr_factor: float = 0.01  # cosine decay: the last step's rate over the stage's
    clip_grad_norm: float = 0.0  # clip the global gradient norm to this (0: off)
    lambda_param: str = "sqrt"  # one of LAMBDA_PARAMS
    lambda_lr_factor: float = 1.0  # the cost weights learn at this fraction of the rate
    backprop_iters: int = 0  # back-propagate through the last k solver iterations (0: all)
    max_seconds: float = 0.0  # stop after the epoch that passes this training time (0: none)
    # stop when the best validation metric improved by less than this fraction over the last
    # quarter of the epochs run (from 4 epochs on; 0: off)
    flat_stop: float = 0.0
    # refuse a network whose validation reconstructions vary in time by less than this fraction
    # of the truth's variance (collapsed to a constant; 0: no check)
    collapse_ratio: float = 1e-3

    def check(self, where: str) -> None:
        _check(self.epochs >= 1, f"{where}.epochs", self.epochs, "must be >= 1")
        _check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")
        _check(
            len(self.schedule) >= 1 and self.schedule[0].epoch == 0,
            f"{where}.schedule",
            self.schedule,
            "needs a first stage at epoch 0",
        )
        epochs = [s.epoch for s in self.schedule]
        _check(epochs == sorted(epochs), f"{where}.schedule", epochs, "epochs must increase")
        _check(
            self.prior_lr_factor >= 0,
            f"{where}.prior_lr_factor",
            self.prior_lr_factor,
            "must be >= 0",
        )
        _check(self.pretrain_lr > 0, f"{where}.pretrain_lr", self.pretrain_lr, "must be positive")
        _check(
            0 <= self.pretrain_tol < 1,
            f"{where}.pretrain_tol",
            self.pretrain_tol,
            "must lie in [0, 1)",
        )
        _check(self.decay in DECAYS, f"{where}.decay", self.decay, f"expected one of {DECAYS}")
        _check(
            self.lambda_param in LAMBDA_PARAMS,
            f"{where}.lambda_param",
            self.lambda_param,
            f"expected one of {LAMBDA_PARAMS}",
        )
        _check(
            0 <= self.min_lr_factor <= 1,
            f"{where}.min_lr_factor",
            self.min_lr_factor,
            "must lie in [0, 1]",
        )
        for key in (
            "warmup_steps", "clip_grad_norm", "lambda_lr_factor", "backprop_iters",
            "max_seconds", "flat_stop", "collapse_ratio", "pretrain_epochs", "pretrain_patience",
            "pretrain_drops", "pretrain_max_seconds",
        ):  # fmt: skip
            value = getattr(self, key)
            _check(value >= 0, f"{where}.{key}", value, "must be >= 0")
        for key in ("unsup_lambdas", "sup_lambdas"):
            value = getattr(self, key)
            _check(
                len(value) == 2 and min(value) >= 0,
                f"{where}.{key}",
                value,
                "needs two non-negative weights",
            )
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"{where}.device",
            self.device,
            "expected auto, cpu or cuda[:N]",
        )
