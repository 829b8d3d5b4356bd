"""The end-to-end architecture Psi_{Phi,Gamma} of the paper (Figure 1), and its checkpoints.

``FourDVarNet`` composes the variational cost ``U_Phi`` (prior and weights) with a solver
``Gamma``: observations and mask in, interpolated initial state, ``n_iter`` solver iterations,
reconstruction out. The direct row's "solver" is a U-Net of the observations (``direct``) that
uses neither the cost nor the initial state. ``build_model`` assembles one table row from its
configuration as its row kind says (``rows``), and ``save_checkpoint``/``load_checkpoint``
store weights together with everything needed to rebuild the model (experiment, model and data
configuration, normalisation, validation metrics).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .config import EvalConfig, Experiment, ModelConfig, as_dict, from_dict
from .cost import VariationalCost
from .data import Normalizer, interpolate, read_torch
from .rows import Inputs, kind_of


class FourDVarNet(nn.Module):
    """``x_hat = Gamma(U_Phi, x0, y, Omega)``, ``x0`` the interpolated observations."""

    def __init__(self, cost: VariationalCost, solver: nn.Module, fill: torch.Tensor):
        super().__init__()
        self.cost, self.solver = cost, solver
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32))

    @property
    def prior(self) -> nn.Module:
        return self.cost.prior

    def initial_state(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return interpolate(y, mask, self.fill)

    def forward(self, y, mask, n_iter: int, callback=None, grad_last: int = 0) -> torch.Tensor:
        """``grad_last``: in training, back-propagate through the last ``grad_last`` solver
        iterations only (0: all; the gradient-based solvers)."""
        x0 = self.initial_state(y, mask)
        if grad_last:
            return self.solver(self.cost, x0, y, mask, n_iter, callback, grad_last=grad_last)
        return self.solver(self.cost, x0, y, mask, n_iter, callback)


def build_model(
    exp: Experiment,
    dt: float,
    norm: Normalizer,
    fill,
    model: ModelConfig | None,
    lambdas=(1.0, 1.0),
    learn_lambdas: bool = False,
    fsgd_step: float | str = 1.0,
    fsgd_fraction: float = 0.5,
    solver: nn.Module | None = None,
    lambda_param: str = "sqrt",
    evaluate: EvalConfig | None = None,
    attrs: dict | None = None,
    train_x: torch.Tensor | None = None,
) -> FourDVarNet:
    """Assemble the row ``exp`` as its kind says (``rows.KINDS``): prior, cost weights and solver
    (unless given). The ensemble smoother and the posterior mean read ``evaluate`` and the data
    file's ``attrs``; the EnKS started from training states reads the training truth
    ``train_x`` (physical units).

    The direct row has no prior and minimises no cost: its U-Net ignores the cost, which holds
    the true RK4 model with fixed weights, so that the validation U logged in training is the
    4D-Var cost of its reconstructions.
    """
    kind = kind_of(exp)
    inputs = Inputs(
        dt, norm, model or ModelConfig(), fsgd_step, fsgd_fraction, evaluate, attrs, train_x
    )
    prior = kind.prior(exp, inputs)
    learn = learn_lambdas and kind.uses_prior
    cost = VariationalCost(prior, *lambdas, learn_lambdas=learn, param=lambda_param)
    return FourDVarNet(cost, solver or kind.solver(exp, inputs), fill)


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to ``path`` through ``<path>.part``, renamed when complete: a killed job
    leaves no file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(
    path: str | Path,
    model: FourDVarNet,
    exp: Experiment,
    model_cfg: ModelConfig,
    data_attrs: dict,
    extra: dict,
) -> None:
    """Write weights, configuration and metrics atomically: the file appears only when complete."""
    ckpt = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "experiment": as_dict(exp),
        "model_config": as_dict(model_cfg),
        "dt": float(data_attrs["dt"]),
        "normalizer": {
            "mean": float(data_attrs["train_mean"]),
            "std": float(data_attrs["train_std"]),
        },
        "fill": model.fill.cpu(),
        "lambdas": model.cost.lambdas,
        "lambda_param": model.cost.param,
        "package_version": __version__,
        **extra,
    }
    save_atomic(ckpt, path)


def load_checkpoint(path: str | Path) -> tuple[FourDVarNet, dict]:
    """Rebuild the model stored at ``path`` (on the CPU); returns ``(model, checkpoint)``."""
    ckpt = read_torch(path, f"checkpoint {path}", "the workflow's `train` rule")
    exp = from_dict(Experiment, ckpt["experiment"], "checkpoint.experiment")
    model_cfg = from_dict(ModelConfig, ckpt["model_config"], "checkpoint.model_config")
    norm = Normalizer(**ckpt["normalizer"])
    model = build_model(
        exp, ckpt["dt"], norm, ckpt["fill"], model_cfg, ckpt["lambdas"],
        lambda_param=ckpt.get("lambda_param", "sqrt"),
    )  # fmt: skip
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt
