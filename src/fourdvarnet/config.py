"""Typed configuration of the pipeline stages, checked before any work starts.

Each stage reads one sub-tree of the workflow's ``config.yaml`` (``data.<system>``,
``model.<system>``, ``train.<system>``, ``evaluate.<system>``). ``from_dict`` refuses unknown keys
and out-of-range values with an error that names the key, so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .dynamics import SYSTEMS

PRIORS = ("rk4", "euler", "genn", "none")
UPSAMPLE = ("block", "linear")
SOLVERS = ("fsgd", "lbfgs", "enks", "bayes", "lstm", "conv", "fixed_point", "direct")
LEARNED_SOLVERS = ("lstm", "conv")
#: The direct-learning row, ``x_hat = CNN(y, Omega)``: no prior, no cost to minimise, the CNN
#: learns from the truth. Prior ``none`` and solver ``direct`` belong to this row only.
DIRECT_ROW = ("supervised", "none", "direct")
SCHEMES = ("none", "unsupervised", "supervised")
#: How the learned solvers see ``g = grad_x U``, each sequence divided by an RMS: ``every``, its
#: RMS at this iteration (the direction only, so the step never shrinks); ``initial``, its RMS
#: at the first iteration of the solve; ``max``, the largest RMS of the solve so far (bounded
#: inputs that shrink as the solve converges); ``none``: the raw gradient.
GRAD_NORMS = ("every", "initial", "max", "none")
#: ``train.<system>.cpu_fast``: the CPU fast path (``fast_cpu.wanted``).
CPU_FAST = ("auto", "on", "off")
#: ``train.<system>.decay``: the learning rate within each schedule stage: constant (``none``,
#: the paper's) or times a cosine from 1 down to ``min_lr_factor`` over the whole training.
DECAYS = ("none", "cosine")
#: ``train.<system>.lambda_param``: how the supervised rows learn the cost weights: ``sqrt``,
#: ``l1 = a1^2, l2 = a2^2`` (two parameters); ``log_ratio``, ``l1 = c e^(r/2), l2 = c e^(-r/2)``
#: with only ``r = log(l1 / l2)`` learned (the normalised-gradient solvers see only the ratio).
LAMBDA_PARAMS = ("sqrt", "log_ratio")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _check(cond: bool, key: str, value: Any, expect: str) -> None:
    if not cond:
        raise ConfigError(f"{key} = {value!r}: {expect}")


def from_dict(cls, d: dict | None, where: str):
    """Build dataclass ``cls`` from ``d``, refusing keys it does not know."""
    d = dict(d or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {}
    for name, value in d.items():
        sub = names[name].type
        if dataclasses.is_dataclass(_SUBCONFIGS.get(sub)):
            value = from_dict(_SUBCONFIGS[sub], value, f"{where}.{name}")
        kwargs[name] = value
    obj = cls(**kwargs)
    obj.check(where)
    return obj


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


@dataclass
class ObsConfig:
    """Observation operator: which entries of each window are observed, and the noise."""

    every: int = 8  # observation time step, in model steps
    components: list[int] | None = None  # observed components (fixed set), or
    n_random: int | None = None  # number of components drawn at random per observation time
    shared: bool = True  # one random draw per observation time for the whole split
    blank_ends: int = 0  # no observation in the first and last ``blank_ends`` steps
    noise_var: float = 2.0

    def check(self, where: str) -> None:
        _check(
            isinstance(self.every, int) and self.every >= 1,
            f"{where}.every",
            self.every,
            "must be an integer >= 1",
        )
        _check(
            (self.components is None) != (self.n_random is None),
            f"{where}.components",
            self.components,
            "set exactly one of components and n_random",
        )
        _check(self.noise_var >= 0, f"{where}.noise_var", self.noise_var, "must be >= 0")
        _check(self.blank_ends >= 0, f"{where}.blank_ends", self.blank_ends, "must be >= 0")


@dataclass
class DataConfig:
    """Truth simulation and twin-experiment sampling for one system (paper Sections 4.1-4.2)."""

    system: str = "l63"
    dt: float = 0.01
    x0: list[float] = field(default_factory=lambda: [8.0, 0.0, 30.0])
    perturb: list[float] | None = None  # [index, value] added to x0 (L96: [20, 0.01])
    spinup: float = 5.0
    n_steps: int = 20000
    substeps: int = 5  # RK4 steps of dt / substeps per step dt of the truth
    window: int = 200
    n_train: int = 10000
    n_val: int = 1000
    n_test: int = 2000
    train_range: list[int] = field(default_factory=lambda: [0, 10500])
    val_range: list[int] = field(default_factory=lambda: [10500, 12000])
    test_range: list[int] = field(default_factory=lambda: [15000, 20000])
    obs: ObsConfig = field(default_factory=ObsConfig)
    seed: int = 100

    def check(self, where: str) -> None:
        _check(self.system in SYSTEMS, f"{where}.system", self.system, f"expected one of {SYSTEMS}")
        _check(self.dt > 0, f"{where}.dt", self.dt, "must be positive")
        _check(
            isinstance(self.substeps, int) and self.substeps >= 1,
            f"{where}.substeps",
            self.substeps,
            "must be an integer >= 1",
        )
        _check(self.window >= 2, f"{where}.window", self.window, "must be >= 2")
        for split in ("train", "val", "test"):
            lo, hi = getattr(self, f"{split}_range")
            _check(
                0 <= lo and hi <= self.n_steps and hi - lo >= self.window,
                f"{where}.{split}_range",
                [lo, hi],
                f"must lie in [0, n_steps={self.n_steps}] and hold a window of {self.window}",
            )
            n = getattr(self, f"n_{split}")
            _check(
                isinstance(n, int) and n >= 1, f"{where}.n_{split}", n, "must be an integer >= 1"
            )
        if self.obs.n_random is not None:
            n_comp = len(self.x0)
            _check(
                1 <= self.obs.n_random <= n_comp,
                f"{where}.obs.n_random",
                self.obs.n_random,
                f"must lie in [1, {n_comp}]",
            )


def _check_kernel(kernel: int, key: str) -> None:
    _check(kernel % 2 == 1 and kernel >= 3, key, kernel, "must be odd and >= 3")


@dataclass
class GennConfig:
    """Two-scale GENN prior (Eq. 10): widths of the constrained and 1x1 layers."""

    width: int = 60  # output channels of the zero-centre convolution
    hidden: int = 30  # channels of the bilinear block
    kernel: int = 11  # kernel of the zero-centre convolution (odd)
    pool: int = 4  # time downsampling of the coarse branch
    head: bool = False  # branches end in ``hidden`` channels and share a 1x1 output layer
    # coarse branch back to full resolution: "block" (the paper's transposed convolution, kernel
    # = stride = pool: piecewise in blocks of ``pool`` steps) or "linear" (1x1 layer, then linear
    # interpolation; its zero centre spans three coarse steps to keep the constraint)
    upsample: str = "linear"

    def check(self, where: str) -> None:
        _check_kernel(self.kernel, f"{where}.kernel")
        for k in ("width", "hidden", "pool"):
            _check(getattr(self, k) >= 1, f"{where}.{k}", getattr(self, k), "must be >= 1")
        _check(self.upsample in UPSAMPLE, f"{where}.upsample", self.upsample, f"one of {UPSAMPLE}")
        if self.upsample == "linear":  # three centre taps masked: a kernel of 3 would keep none
            _check(self.kernel >= 5, f"{where}.kernel", self.kernel, "must be >= 5 with linear")


@dataclass
class DirectConfig:
    """U-Net of the direct row ``x_hat = CNN(y, Omega)``: ``levels`` halvings of time, with
    ``width`` channels at full resolution, doubled at each level, two convolutions per level."""

    width: int = 8
    levels: int = 2
    kernel: int = 5  # odd

    def check(self, where: str) -> None:
        _check_kernel(self.kernel, f"{where}.kernel")
        _check(self.width >= 1, f"{where}.width", self.width, "must be >= 1")
        _check(self.levels >= 0, f"{where}.levels", self.levels, "must be >= 0")


@dataclass
class ModelConfig:
    """Architecture of the priors Phi, the learned solvers Gamma and the direct CNN."""

    genn: GennConfig = field(default_factory=GennConfig)
    direct: DirectConfig = field(default_factory=DirectConfig)
    lstm_hidden: int = 5  # ConvLSTM hidden channels, as a multiple of the state channels
    conv_widths: list[int] = field(default_factory=lambda: [8, 16])  # aG-Conv, x channels
    kernel: int = 3  # kernel of the solver convolutions
    bound: float = 5.0  # aG-Conv update bounded by bound * atan(z / bound)
    grad_norm: str = "max"  # one of GRAD_NORMS
    init_step: float = 0.05  # initial scale of the learned solvers' output layers
    learn_step: bool = False  # a learned scale exp(s) of every solver step, s starting at 0

    def check(self, where: str) -> None:
        _check(
            self.grad_norm in GRAD_NORMS,
            f"{where}.grad_norm",
            self.grad_norm,
            f"expected one of {GRAD_NORMS}",
        )
        _check(self.kernel % 2 == 1, f"{where}.kernel", self.kernel, "must be odd")
        _check(self.bound > 0, f"{where}.bound", self.bound, "must be positive")


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
    val_n_iter: int = 20  # solver iterations when scoring the validation split
    device: str = "auto"
    # CPU fast path (compiled gradient of U, fast_cpu): auto (long ODE-prior jobs), on, off
    cpu_fast: str = "auto"
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

    def __post_init__(self) -> None:
        if isinstance(self.cpu_fast, bool):  # YAML 1.1 reads unquoted on/off as booleans
            self.cpu_fast = "on" if self.cpu_fast else "off"

    def check(self, where: str) -> None:
        _check(self.epochs >= 1, f"{where}.epochs", self.epochs, "must be >= 1")
        _check(
            self.cpu_fast in CPU_FAST,
            f"{where}.cpu_fast",
            self.cpu_fast,
            f"expected one of {CPU_FAST}",
        )
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
            "max_seconds", "flat_stop", "collapse_ratio",
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


@dataclass
class FsgdConfig:
    """Fixed-step gradient descent baseline (Eq. 5)."""

    step: float | str = "auto"  # per-sample step on the normalised state, or from the curvature
    step_fraction: float = 0.5  # step = fraction * 2 / lambda_max (largest Hessian eigenvalue)
    n_iter: int = 150000
    batch_size: int = 2000
    lambdas: list[float] = field(default_factory=lambda: [0.01, 1.0])

    def check(self, where: str) -> None:
        _check(
            self.step == "auto" or (isinstance(self.step, (int, float)) and self.step > 0),
            f"{where}.step",
            self.step,
            "must be positive or 'auto'",
        )
        _check(
            0 < self.step_fraction < 1,
            f"{where}.step_fraction",
            self.step_fraction,
            "must lie in (0, 1)",
        )
        _check(self.n_iter >= 1, f"{where}.n_iter", self.n_iter, "must be >= 1")
        _check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")


@dataclass
class LbfgsConfig:
    """Weak-constraint 4D-Var by L-BFGS: the same cost as FSGD (true RK4 prior, FSGD's weights)."""

    n_iter: int = 1000
    history: int = 20
    batch_size: int = 2000

    def check(self, where: str) -> None:
        for k in ("n_iter", "history", "batch_size"):
            _check(getattr(self, k) >= 1, f"{where}.{k}", getattr(self, k), "must be >= 1")


@dataclass
class EnksConfig:
    """Ensemble Kalman smoother (ETKF analysis) with the true RK4 model, no training."""

    members: int = 50
    inflation: float = 1.02  # multiplicative inflation of the forecast anomalies
    lag: int | None = 80  # smoother lag in steps; None: the whole window
    batch_size: int = 500
    seed: int = 0  # draws of the initial ensembles (from the training climatology)

    def check(self, where: str) -> None:
        _check(self.members >= 2, f"{where}.members", self.members, "must be >= 2")
        _check(self.inflation >= 1.0, f"{where}.inflation", self.inflation, "must be >= 1")
        _check(self.lag is None or self.lag >= 0, f"{where}.lag", self.lag, "must be >= 0 or null")
        _check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")


@dataclass
class BayesConfig:
    """The posterior mean by importance sampling over a bank of true trajectories (L63 only)."""

    members: int = 2000  # independent trajectories of the bank
    steps: int = 5000  # window starts per trajectory (after the spin-up)
    spinup: float = 10.0
    seed: int = 0
    trunc: float = 20.0  # candidates with log-weight below the best minus trunc are dropped

    def check(self, where: str) -> None:
        for k in ("members", "steps"):
            _check(getattr(self, k) >= 2, f"{where}.{k}", getattr(self, k), "must be >= 2")
        _check(self.trunc > 0, f"{where}.trunc", self.trunc, "must be positive")


@dataclass
class EvalConfig:
    """Scoring of the test split (paper Section 4.1, Tables 1-2)."""

    n_iter: int = 20
    score_lambdas: list[float] = field(default_factory=lambda: [0.01, 1.0])
    batch_size: int = 1000
    fsgd: FsgdConfig = field(default_factory=FsgdConfig)
    lbfgs: LbfgsConfig = field(default_factory=LbfgsConfig)
    enks: EnksConfig = field(default_factory=EnksConfig)
    bayes: BayesConfig = field(default_factory=BayesConfig)
    fixed_point_iter: int = 100
    device: str = "auto"

    def check(self, where: str) -> None:
        _check(self.n_iter >= 1, f"{where}.n_iter", self.n_iter, "must be >= 1")
        _check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")


@dataclass
class Experiment:
    """One table row: system x learning scheme x prior x solver x seed."""

    system: str
    scheme: str
    prior: str
    solver: str
    seed: int = 0

    def check(self, where: str = "experiment") -> None:
        _check(self.system in SYSTEMS, f"{where}.system", self.system, f"expected one of {SYSTEMS}")
        _check(self.scheme in SCHEMES, f"{where}.scheme", self.scheme, f"expected one of {SCHEMES}")
        _check(self.prior in PRIORS, f"{where}.prior", self.prior, f"expected one of {PRIORS}")
        _check(self.solver in SOLVERS, f"{where}.solver", self.solver, f"expected one of {SOLVERS}")
        direct = "-".join(DIRECT_ROW)
        if self.solver == "direct":
            _check(
                self.scheme == "supervised",
                f"{where}.scheme",
                self.scheme,
                "solver 'direct' (x_hat = CNN(y), no cost to minimise) learns from the truth: "
                f"needs scheme 'supervised' ({direct})",
            )
            _check(
                self.prior == "none",
                f"{where}.prior",
                self.prior,
                f"solver 'direct' uses no prior: needs prior 'none' ({direct})",
            )
            return
        _check(
            self.prior != "none",
            f"{where}.prior",
            self.prior,
            f"prior 'none' is the direct row's only ({direct}); solver {self.solver!r} needs "
            "one of rk4, euler, genn",
        )
        learned = self.solver in LEARNED_SOLVERS
        _check(
            learned == (self.scheme != "none"),
            f"{where}.scheme",
            self.scheme,
            f"solver {self.solver!r} needs scheme "
            + ("'supervised' or 'unsupervised'" if learned else "'none'"),
        )

    @property
    def name(self) -> str:
        return f"{self.system}/{self.scheme}-{self.prior}-{self.solver}/seed{self.seed}"


_SUBCONFIGS = {
    "ObsConfig": ObsConfig,
    "GennConfig": GennConfig,
    "DirectConfig": DirectConfig,
    "FsgdConfig": FsgdConfig,
    "LbfgsConfig": LbfgsConfig,
    "EnksConfig": EnksConfig,
    "BayesConfig": BayesConfig,
}


def stages(raw: list) -> list[Stage]:
    return [from_dict(Stage, s, f"schedule[{i}]") for i, s in enumerate(raw)]


def train_config(d: dict | None, where: str = "train") -> TrainConfig:
    d = dict(d or {})
    schedule = stages(d.pop("schedule", [{"epoch": 0, "n_iter": 5, "lr": 1e-3}]))
    cfg = from_dict(TrainConfig, d, where)
    cfg.schedule = schedule
    cfg.check(where)
    return cfg


def row_train(train: dict, row: str) -> dict:
    """The training values of one table row: ``train.<system>`` with its ``rows.<row>``
    overrides merged in (key by key, lists whole), without the ``rows`` table itself."""
    return deep_merge(system_train(train), (train.get("rows") or {}).get(row) or {})


def system_train(train: dict) -> dict:
    """The training values of a system without its per-row overrides (the GENN pre-training
    shared by the rows of a seed reads these)."""
    return {k: v for k, v in train.items() if k != "rows"}


def check_train_rows(cfg: dict) -> None:
    """Refuse a per-row training override (``train.<system>.rows.<row>``) for a row that is not
    a learned row of ``experiments.<system>``: it would change nothing, silently; so would a
    row's GENN pre-training values (one pre-training per system and seed). A system without
    table rows (absent or empty: not run) is not checked."""
    experiments = cfg.get("experiments") or {}
    for system, train in (cfg.get("train") or {}).items():
        if not experiments.get(system):
            continue
        learned = [r for r in experiments[system] if not r.startswith("none-")]
        for row, values in ((train or {}).get("rows") or {}).items():
            if row not in learned:
                raise ConfigError(
                    f"train.{system}.rows.{row}: not a learned row of experiments.{system} "
                    f"({', '.join(learned) or 'none'})"
                )
            shared = sorted(set(values or {}) & {"pretrain_epochs", "pretrain_lr"})
            if shared:
                raise ConfigError(
                    f"train.{system}.rows.{row}: {shared} cannot differ by row: the GENN "
                    f"pre-training is shared by the rows of a seed; set train.{system}.{shared[0]}"
                )


def drop_absent_figure_rows(cfg: dict, systems: dict[str, str]) -> list[str]:
    """Drop the figure entries (``figures.<fig>``, label: row) whose row is not a table row of
    the figure's system (``experiments.<system>``; ``systems`` maps each figure to its system),
    so that a subset of rows runs from the command line; returns one line per entry dropped.
    A figure left without entries is not drawn. Figures of a system without table rows are
    not drawn either and not checked."""
    experiments = cfg.get("experiments") or {}
    dropped = []
    for fig, rows in (cfg.get("figures") or {}).items():
        system = systems.get(fig)
        if not experiments.get(system):
            continue
        for label, row in list((rows or {}).items()):
            if row not in experiments[system]:
                del rows[label]
                dropped.append(
                    f"figures.{fig}: {label!r} ({row}) left out: not a row of experiments.{system}"
                )
    return dropped


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated recursively by ``override`` (new dicts; lists are replaced whole)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def resolve_preset(raw: dict, overrides: dict | None = None) -> dict:
    """Apply the preset named by ``raw['preset']`` (from ``raw['presets']``) onto the base config.

    The base config holds the paper's values; a preset overrides some of them, and
    ``overrides`` (the user's own values: ``--configfile``, ``--config``) override both, key by
    key. The result no longer holds ``presets``.
    """
    name = raw.get("preset", "paper")
    presets = raw.get("presets", {})
    if name not in presets:
        raise ConfigError(f"preset = {name!r}: unknown preset; expected one of {sorted(presets)}")
    base = {k: v for k, v in raw.items() if k != "presets"}
    out = deep_merge(base, presets[name] or {})
    user = {k: v for k, v in (overrides or {}).items() if k != "presets"}
    return deep_merge(out, user)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_command_line(values) -> dict:
    """``--config`` values with the strings nested in them read as YAML scalars.

    Snakemake reads ``--config key=value`` with int, float, bool, then YAML's base loader, which
    leaves every nested scalar a string: ``'train={l63: {epochs: 3}}'`` gives ``'3'``. Here such
    strings become what YAML makes of them (``3``, ``1.0e-3``, ``true``; also ``1e-3``, which
    YAML 1.1 leaves a string); top-level values are kept as Snakemake parsed them.
    """

    def leaf(v):
        if isinstance(v, dict):
            return {k: leaf(x) for k, x in v.items()}
        if isinstance(v, list):
            return [leaf(x) for x in v]
        if not isinstance(v, str):
            return v
        if _NUMBER.fullmatch(v.strip()):
            return int(v) if re.fullmatch(r"[-+]?\d+", v.strip()) else float(v)
        try:
            parsed = yaml.safe_load(v)
        except yaml.YAMLError:
            return v
        return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else v

    return {k: leaf(v) if isinstance(v, (dict, list)) else v for k, v in dict(values).items()}


def user_config(overwrite_config, command_line) -> dict:
    """The user's values: ``overwrite_config`` (Snakemake's merge of ``--configfile`` files and
    ``--config``) with the ``--config`` part (``command_line``) parsed by ``parse_command_line``."""
    return deep_merge(_plain(overwrite_config), parse_command_line(_plain(command_line)))


def _plain(v):
    """Mappings (Snakemake passes immutables.Map) as dicts, recursively."""
    if hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def schema_error(err, where: str) -> str:
    """A one-line message for a jsonschema ``ValidationError``: the key's path, what is wrong,
    and for an unknown key the keys expected there (not the whole schema and config)."""
    path = ".".join(str(p) for p in err.absolute_path) or "top level"
    message = err.message if len(err.message) <= 300 else err.message[:300] + " ..."
    msg = f"config {where}: {path}: {message}"
    expected = err.schema.get("properties") if isinstance(err.schema, dict) else None
    if err.validator == "additionalProperties" and isinstance(expected, dict):
        msg += f"; expected keys: {', '.join(sorted(expected))}"
    return msg + " (schema: workflow/schemas/config.schema.yaml)"


def canonical(v):
    """``v`` with every dict's keys sorted (recursively; lists keep their order), so that a
    change of key order alone does not change a rule's params."""
    if isinstance(v, dict):
        return {k: canonical(v[k]) for k in sorted(v, key=str)}
    if isinstance(v, list):
        return [canonical(x) for x in v]
    return v
