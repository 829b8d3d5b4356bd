"""Row kinds: the one place that says what a table row ``scheme-prior-solver`` is, and how it is
built, trained and scored.

A row's solver names its kind (``KINDS``), and the kind says which schemes and priors go with it:

* ``learned``: a prior Phi and a learned solver Gamma (aG-Conv, aG-LSTM), trained unsupervised or
  supervised (paper Section 3.4);
* ``variational``: the cost U_Phi minimised by a classic solver (FSGD, L-BFGS, fixed point),
  no training;
* ``ensemble``: the ensemble Kalman smoother of the true model, no cost to minimise;
* ``posterior``: the exact posterior mean by importance sampling (L63's Bayes floor);
* ``direct``: a U-Net of the observations learned from the truth; no prior, no cost.

A learning scheme (``SCHEMES``) says what a trained row minimises and how its best epoch is
chosen. The model, training, evaluation and pipeline ask these tables rather than the row's
names; adding a kind of row is one entry of ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import ConfigError, EvalConfig, Experiment, ModelConfig, TrainConfig
from .cost import prior_term
from .data import Normalizer
from .direct import DirectSolver
from .enks import EnKSSolver
from .lbfgs import LBFGSSolver
from .posterior import PosteriorMeanSolver
from .priors import LAYOUT, build_prior, true_prior
from .solvers import build_solver

ODE_PRIORS = ("rk4", "euler")
LEARNED_PRIORS = (*ODE_PRIORS, "genn")


# --- learning schemes -------------------------------------------------------------------------


def unsupervised_loss(model, x_hat, x, y, mask, prior_weight: float) -> torch.Tensor:
    """The 4D-Var cost of the reconstructions (no truth needed)."""
    return model.cost(x_hat, y, mask).mean()


def supervised_loss(model, x_hat, x, y, mask, prior_weight: float) -> torch.Tensor:
    """The reconstruction MSE, plus ``prior_weight`` times the prior's residual on the
    reconstructions and on the truth (the prior learns to fit the truth's dynamics)."""
    mse = ((x_hat - x) ** 2).mean()
    if not prior_weight:
        return mse
    prior = model.prior
    return mse + prior_weight * (prior_term(x_hat, prior).mean() + prior_term(x, prior).mean())


@dataclass(frozen=True)
class Scheme:
    """A learning scheme: the training loss, the validation metric that picks the best epoch,
    whether the prior and the cost weights learn with the solver, and the ``train.<system>``
    field that holds its initial cost weights."""

    loss: Callable[..., torch.Tensor]
    select_on: str
    learns_cost: bool
    lambdas: str


SCHEMES = {
    "unsupervised": Scheme(unsupervised_loss, "val_u", False, "unsup_lambdas"),
    "supervised": Scheme(supervised_loss, "val_r", True, "sup_lambdas"),
}


# --- how each kind builds its parts -----------------------------------------------------------


@dataclass
class Inputs:
    """What the builders read: the data's time step and normalisation, the model configuration,
    FSGD's step, and for the EnKS and the posterior mean the evaluation settings and the data
    file's attributes; for the EnKS started from training states (``enks.init: states``) the
    training truth ``train_x`` ``(sample, component, time)``, physical units."""

    dt: float
    norm: Normalizer
    model: ModelConfig
    fsgd_step: float | str = 1.0
    fsgd_fraction: float = 0.5
    evaluate: EvalConfig | None = None
    attrs: dict | None = None
    train_x: torch.Tensor | None = None

    def needs(self, what: str, exp: Experiment):
        value = getattr(self, what)
        if value is None:
            raise ValueError(f"row {exp.name} needs the {what} settings to be built")
        return value


def _true_prior(exp: Experiment, inp: Inputs) -> nn.Module:
    return true_prior(exp.system, inp.dt, inp.norm.mean, inp.norm.std)


def _built_prior(exp: Experiment, inp: Inputs) -> nn.Module:
    return build_prior(exp.prior, exp.system, inp.dt, inp.norm.mean, inp.norm.std, inp.model)


def _baseline_prior(exp: Experiment, inp: Inputs) -> nn.Module:
    """The true model for the RK4 baselines; an Euler or untrained GENN prior as asked."""
    return (_true_prior if exp.prior == "rk4" else _built_prior)(exp, inp)


def _classic_solver(exp: Experiment, inp: Inputs) -> nn.Module:
    return build_solver(exp.solver, exp.system, inp.model, inp.fsgd_step, inp.fsgd_fraction)


def _lbfgs(exp: Experiment, inp: Inputs) -> nn.Module:
    """L-BFGS with the memory and tolerances of ``evaluate.<system>.lbfgs`` (without settings:
    a memory of 20, no tolerance)."""
    if inp.evaluate is None:
        return LBFGSSolver(20)
    c = inp.evaluate.lbfgs
    return LBFGSSolver(c.history, c.tolerance_grad, c.tolerance_change)


def _learned_solver(exp: Experiment, inp: Inputs) -> nn.Module:
    return build_solver(exp.solver, exp.system, inp.model)


def _direct_solver(exp: Experiment, inp: Inputs) -> nn.Module:
    return DirectSolver(*LAYOUT[exp.system], inp.model.direct)


def needs_training_states(exp: Experiment, cfg: EvalConfig | None) -> bool:
    """Whether the row's solver reads the training truth itself (the EnKS with
    ``enks.init: states``), not only the statistics in the data file's attributes."""
    return exp.solver == "enks" and cfg is not None and cfg.enks.init == "states"


def _ensemble_smoother(exp: Experiment, inp: Inputs) -> nn.Module:
    """The EnKS of ``evaluate.<system>.enks``, its initial ensembles drawn from the training
    climatology (``init: gaussian``: its mean and covariance, in the data file's attributes;
    ``init: states``: the training truth's states) and its observation error from the data
    file's attributes."""
    c, attrs, norm = inp.needs("evaluate", exp).enks, inp.needs("attrs", exp), inp.norm
    mean0 = np.asarray(attrs["train_component_mean"], dtype=np.float64)
    cov0 = np.asarray(attrs["train_component_cov"], dtype=np.float64).reshape(len(mean0), -1)
    states = inp.needs("train_x", exp) if needs_training_states(exp, inp.evaluate) else None
    return EnKSSolver(
        mean0, cov0, float(attrs["noise_var"]), c.members, c.inflation, c.lag, c.seed,
        norm.mean, norm.std, states, c.radius,
    )  # fmt: skip


def _posterior_mean(exp: Experiment, inp: Inputs) -> nn.Module:
    """The exact posterior mean (importance sampling over a bank of true trajectories,
    integrated as the data's truth), the Bayes floor of Table 1."""
    c, attrs = inp.needs("evaluate", exp).bayes, inp.needs("attrs", exp)
    bank = dict(
        system=attrs["system"], dt=float(attrs["dt"]), members=c.members, steps=c.steps,
        window=int(attrs["window"]), spinup=c.spinup, seed=c.seed,
        substeps=int(attrs["integrator_substeps"]), dtype=torch.float32,
    )  # fmt: skip
    return PosteriorMeanSolver(
        obs_var=float(attrs["noise_var"]), norm_mean=inp.norm.mean, norm_std=inp.norm.std,
        bank_params=bank, trunc=c.trunc,
    )  # fmt: skip


# --- the budgets of their solves --------------------------------------------------------------


def _iterations(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    """FSGD and L-BFGS: their own iterations and batch; fixed point: its own iterations."""
    if exp.solver == "fixed_point":
        return cfg.fixed_point_iter, cfg.batch_size
    own = getattr(cfg, exp.solver)
    return own.n_iter, own.batch_size


def _learned_budget(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    return cfg.n_iter, cfg.batch_size


def _one_pass(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    return 1, cfg.batch_size


def _ensemble_budget(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    return 1, cfg.enks.batch_size


def _whole_split(exp: Experiment, cfg: EvalConfig) -> tuple[int, int]:
    # one call over the whole split: the posterior's diagnostics are per call
    return 1, 1_000_000


# --- the cost weights of the untrained rows ---------------------------------------------------


def _shared_weights(exp: Experiment, cfg: EvalConfig) -> list[float]:
    """``evaluate.<system>.fsgd.lambdas`` (the paper's (0.01, 1)): the untrained rows but L-BFGS."""
    return cfg.fsgd.lambdas


def _lbfgs_weights(exp: Experiment, cfg: EvalConfig) -> list[float]:
    """``evaluate.<system>.lbfgs.lambdas``: L-BFGS's own, chosen on the validation split."""
    return cfg.lbfgs.lambdas


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowKind:
    """How the rows of one kind are built (``prior``, ``solver``), trained (``schemes``;
    ``("none",)``: not trained) and scored (``budget``: iterations and batch of the test
    solve). ``uses_prior``: the prior enters the loss and the scores (not the direct CNN's).
    ``one_pass``: the solve is one pass, so the training schedule's iteration ramp is moot.
    ``diverges``: the likely cause named when its scores are not finite. ``weights``: the cost
    weights ``(l1, l2)`` of an untrained row, from the evaluation settings."""

    name: str
    schemes: tuple[str, ...]
    priors: tuple[str, ...]
    prior: Callable[[Experiment, Inputs], nn.Module]
    solver: Callable[[Experiment, Inputs], nn.Module]
    budget: Callable[[Experiment, EvalConfig], tuple[int, int]]
    diverges: str
    uses_prior: bool = True
    one_pass: bool = False
    weights: Callable[[Experiment, EvalConfig], list[float]] = _shared_weights

    @property
    def trained(self) -> bool:
        return self.schemes != NOT_TRAINED


NOT_TRAINED = ("none",)
_DIVERGED = "the {solver!r} solver diverged; check evaluate.{system}"
_LEARNED = RowKind(
    "learned", ("unsupervised", "supervised"), LEARNED_PRIORS, _built_prior, _learned_solver,
    _learned_budget,
    diverges="the learned solver diverged at test time; lower evaluate.{system}.n_iter (towards "
    "the training schedule's n_iter) or see its training log",
)  # fmt: skip


def _variational(
    priors: tuple[str, ...], solver, diverges: str = _DIVERGED, weights=_shared_weights
) -> RowKind:
    """A classic minimiser of the cost with the baselines' prior, untrained, its own iterations."""
    return RowKind(
        "variational", NOT_TRAINED, priors, _baseline_prior, solver, _iterations, diverges,
        weights=weights,
    )  # fmt: skip


#: Solver -> its row kind.
KINDS: dict[str, RowKind] = {
    "conv": _LEARNED,
    "lstm": _LEARNED,
    "fsgd": _variational(
        LEARNED_PRIORS,
        _classic_solver,
        "fixed-step gradient descent diverged: its step is too large for the cost's curvature; "
        "lower evaluate.{system}.fsgd.step",
    ),
    "fixed_point": _variational(
        LEARNED_PRIORS,
        _classic_solver,
        "the fixed-point iterations diverged; lower evaluate.{system}.fixed_point_iter or check "
        "the prior",
    ),
    "lbfgs": _variational(("rk4",), _lbfgs, weights=_lbfgs_weights),
    "enks": RowKind(
        "ensemble",
        NOT_TRAINED,
        ("rk4",),
        _true_prior,
        _ensemble_smoother,
        _ensemble_budget,
        _DIVERGED,
    ),
    "bayes": RowKind(
        "posterior", NOT_TRAINED, ("rk4",), _true_prior, _posterior_mean, _whole_split, _DIVERGED
    ),
    "direct": RowKind(
        "direct",
        ("supervised",),
        ("none",),
        _true_prior,
        _direct_solver,
        _one_pass,
        diverges="the direct CNN's output is not finite; see its training log",
        uses_prior=False,
        one_pass=True,
    ),
}
DIRECT_ROW = "supervised-none-direct"


def _names(values) -> str:
    return " or ".join(repr(v) for v in values)


def kind_of(exp: Experiment, where: str = "experiment") -> RowKind:
    """The kind of row ``exp`` (its names checked first); a combination that no kind holds is
    refused with a ``ConfigError`` naming what the solver needs."""
    exp.check(where)
    kind = KINDS.get(exp.solver)
    if kind is None:
        raise ConfigError(f"{where}.solver = {exp.solver!r}: no row kind; expected one of {KINDS}")
    if exp.scheme not in kind.schemes:
        why = " (x_hat = CNN(y), no cost to minimise: it learns from the truth)"
        raise ConfigError(
            f"{where}.scheme = {exp.scheme!r}: solver {exp.solver!r} needs scheme "
            f"{_names(kind.schemes)}{why if not kind.uses_prior else ''}"
        )
    if exp.prior not in kind.priors:
        if exp.prior == "none":
            need = f"prior 'none' is the direct row's only ({DIRECT_ROW}); "
            need += f"solver {exp.solver!r} needs prior {_names(kind.priors)}"
        else:
            need = f"solver {exp.solver!r} needs prior {_names(kind.priors)}"
            need += " (it uses no prior)" if not kind.uses_prior else ""
        raise ConfigError(f"{where}.prior = {exp.prior!r}: {need}")
    return kind


def scheme_of(exp: Experiment) -> Scheme:
    """The learning scheme of a trained row."""
    if exp.scheme not in SCHEMES:
        raise ValueError(f"row {exp.name} has no learning scheme: nothing to train")
    return SCHEMES[exp.scheme]


def learns_prior(exp: Experiment, cfg: TrainConfig) -> bool:
    """A scheme that learns the cost learns a GENN prior, and an ODE prior's parameters when
    ``learn_ode``."""
    if not (exp.scheme in SCHEMES and SCHEMES[exp.scheme].learns_cost):
        return False
    return exp.prior == "genn" or (exp.prior in ODE_PRIORS and cfg.learn_ode)


def pretrains_prior(exp: Experiment) -> bool:
    """A learned GENN prior is first fitted to the truth's one-step maps (pre-training)."""
    return kind_of(exp).trained and exp.prior == "genn"


def divergence_cause(solver: str, system: str) -> str:
    """The likely cause of non-finite scores of a row with ``solver``."""
    diverges = KINDS[solver].diverges if solver in KINDS else _DIVERGED
    return diverges.format(system=system, solver=solver)
