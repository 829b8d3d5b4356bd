"""One training step and the validation solve, behind one interface with two runners.

A runner owns the optimiser and takes a step: ``runner.step(loss_fn, (x, y, mask), key)`` runs
``loss_fn`` on the batch, back-propagates, and updates the parameters; ``key`` changes whenever
``loss_fn`` computes something else (the number of solver iterations), which the CUDA-graph
runner needs to know. ``runner.solve`` replaces ``model(y, mask, n_iter)`` in the
validation solves (None: the model itself), and ``runner.active()`` is the block in which its
steps and solves run.

* ``EagerRunner``: the reference, eager PyTorch (the CPU's only runner);
* ``GraphedRunner``: each step replays a CUDA graph (``fourdvarnet.fast``), captured again when
  ``key`` changes; its validation solves replay graphed solver iterations.

``make_runner`` picks the runner of a training and builds its optimiser.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..fast import FastSolve, GraphedTrainStep, graphs_available
from ..solvers import Solver
from .optim import Group, clip, make_optimizer


class EagerRunner:
    """Loss, backward and optimiser step in eager PyTorch."""

    name = "eager"

    def __init__(self, model: nn.Module, groups: list[Group], lr: float, max_norm: float = 0.0):
        self.model, self.groups, self.max_norm = model, groups, max_norm
        self.opt = make_optimizer(groups, lr, capturable=self.name == "cuda_graphs")
        self.solve = None

    def active(self):
        return contextlib.nullcontext()

    def step(self, loss_fn, batch: tuple[torch.Tensor, ...], key=None) -> torch.Tensor:
        loss = loss_fn(*batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip(self.groups, self.max_norm)
        self.opt.step()
        return loss.detach()


class GraphedRunner(EagerRunner):
    """Each step a replayed CUDA graph, captured on the first batch of each ``key``. The
    learning rates are tensors on the device, read by the graph, so that ``optim.set_lr``
    changes them between replays without a capture."""

    name = "cuda_graphs"

    def __init__(self, model: nn.Module, groups: list[Group], lr: float, max_norm: float = 0.0):
        super().__init__(model, groups, lr, max_norm)
        self.solve = FastSolve(model)
        self._graph, self._key = None, None

    def step(self, loss_fn, batch, key=None) -> torch.Tensor:
        if self._graph is None or key != self._key:
            device = self.groups[0].params[0].device
            for group in self.opt.param_groups:  # also after a resume's load_state_dict
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), device=device)
            self._graph = GraphedTrainStep(
                loss_fn, self.opt, batch, before_step=lambda: clip(self.groups, self.max_norm)
            )
            self._key = key
        return self._graph(*batch)


def make_runner(
    model: nn.Module,
    groups: list[Group],
    lr: float,
    device: torch.device,
    fast: bool = True,
    max_norm: float = 0.0,
):
    """The runner of a training on ``device``: with ``fast``, CUDA graphs for a gradient-based
    solver on CUDA, else eager. Its steps clip the gradient norm to ``max_norm`` (0: no
    clipping)."""
    fast = fast and graphs_available(device) and isinstance(model.solver, Solver)
    kind = GraphedRunner if fast else EagerRunner
    return kind(model, groups, lr, max_norm)
