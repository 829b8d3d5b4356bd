"""The optimiser of a training: its parameter groups, the learning-rate schedule, clipping.

* ``parameter_groups``: what learns in a row and at which fraction of the base rate (the
  solver at 1, a learned prior at ``prior_lr_factor``, the cost weights at
  ``lambda_lr_factor``);
* ``Schedule``: the number of solver iterations and the base learning rate of each step, from
  the stages of ``train.<system>.schedule`` (the paper's ramp 5 -> 10 -> 15 -> 20 iterations),
  optionally with a linear warm-up and a cosine decay;
* ``make_optimizer``, ``set_lr`` and ``clip``: Adam over the groups, each at its fraction of a
  base rate, and the gradient-norm clipping before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Experiment, TrainConfig
from ..rows import scheme_of


@dataclass
class Group:
    """Parameters that learn together at ``scale`` times the base learning rate."""

    name: str
    params: list[nn.Parameter]
    scale: float = 1.0


def parameter_groups(model: nn.Module, exp: Experiment, cfg: TrainConfig) -> list[Group]:
    """The groups that have trainable parameters: the solver; for a scheme that learns the cost
    (supervised), the prior (when it learns) and the cost weights (when ``learn_lambdas``)."""
    groups = [Group("solver", list(model.solver.parameters()))]
    if scheme_of(exp).learns_cost:
        prior = [p for p in model.prior.parameters() if p.requires_grad]
        groups.append(Group("prior", prior, cfg.prior_lr_factor))
        weights = [p for p in model.cost.weight_parameters() if p.requires_grad]
        groups.append(Group("weights", weights, cfg.lambda_lr_factor))
    return [g for g in groups if g.params]


def make_optimizer(groups: list[Group], lr: float, capturable: bool = False):
    """Adam over ``groups``, each at its scale times ``lr``."""
    return torch.optim.Adam(
        [{"params": g.params, "lr": lr * g.scale} for g in groups], lr=lr, capturable=capturable
    )


def set_lr(opt: torch.optim.Optimizer, groups: list[Group], lr: float) -> None:
    """Set every group's rate to its scale times the base rate ``lr`` (a tensor rate, as the
    CUDA-graph runner uses, is updated in place)."""
    for group, spec in zip(opt.param_groups, groups, strict=True):
        rate = lr * spec.scale
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(rate)
        else:
            group["lr"] = rate


def stage_at(cfg: TrainConfig, epoch: int):
    """The schedule's stage in force at ``epoch``."""
    return [s for s in cfg.schedule if s.epoch <= epoch][-1]


def clip(groups: list[Group], max_norm: float) -> None:
    """Scale the gradients so that their global norm is at most ``max_norm`` (0: no clipping)."""
    if max_norm:
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g.params], max_norm)


class Schedule:
    """Solver iterations per epoch and the base learning rate per optimiser step.

    The rate of a step is its stage's ``lr`` times a linear warm-up from 0 over the first
    ``warmup_steps`` steps, times, with ``decay: cosine``, a cosine from 1 at the first step
    down to ``min_lr_factor`` at the last step of the training (``epochs`` x
    ``steps_per_epoch``). The defaults (no warm-up, no decay) give the stage rates alone.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, one_pass: bool = False):
        self.cfg, self.steps_per_epoch, self.one_pass = cfg, steps_per_epoch, one_pass
        self.total = cfg.epochs * steps_per_epoch

    def n_iter(self, epoch: int) -> int:
        """Solver iterations in the training steps of ``epoch`` (1 for a one-pass network)."""
        return 1 if self.one_pass else stage_at(self.cfg, epoch).n_iter

    def lr(self, epoch: int, step: int) -> float:
        """The base learning rate of optimiser step ``step`` (counted from 0 over the whole
        training) of ``epoch``."""
        rate = stage_at(self.cfg, epoch).lr
        if step < self.cfg.warmup_steps:
            rate *= (step + 1) / (self.cfg.warmup_steps + 1)
        if self.cfg.decay == "cosine":
            t = step / max(self.total - 1, 1)
            low = self.cfg.min_lr_factor
            rate *= low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return rate
