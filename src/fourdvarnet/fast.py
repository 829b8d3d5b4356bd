"""The fast path on CUDA: training steps and solver iterations replayed as CUDA graphs.

A training step of a learned solver unrolls up to 20 iterations, each a forward and backward of
the prior, and differentiates through all of them: thousands of small kernels whose launch
overhead, not arithmetic, sets the time. Captured once as a CUDA graph (static shapes, no host
synchronisation, an optimiser with ``capturable=True``) the step replays at the speed of the GPU.

* ``GraphedTrainStep``: the whole step (solver unroll, double backward, optimiser step);
  re-captured when the number of iterations or the learning rate changes.
* ``GraphedIteration``: one solver iteration without training graph, replayed ``n_iter`` times
  (validation, evaluation, the FSGD baseline's many thousand iterations).

Both compute exactly what the eager code computes (tested against it); the eager code is the
reference. On the CPU the eager code runs (a compiled gradient of U was measured 1.27x faster
per training epoch, too little to keep: docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def graphs_available(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def _snapshot(opt: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    return {
        id(t): t.detach().clone()
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    }


def _restore(opt: torch.optim.Optimizer, params: list[torch.Tensor], saved_params, saved_state):
    """Undo the warm-up steps in place (the captured graph keeps pointing at these tensors)."""
    with torch.no_grad():
        for p, v in zip(params, saved_params, strict=True):
            p.copy_(v)
        for state in opt.state.values():
            for t in state.values():
                if isinstance(t, torch.Tensor):
                    if id(t) in saved_state:
                        t.copy_(saved_state[id(t)])
                    else:  # created by the warm-up: a fresh optimiser's state is zero
                        t.zero_()


class GraphedTrainStep:
    """One training step ``loss_fn(batch) -> loss; backward; opt.step()`` as a CUDA graph.

    ``loss_fn`` takes the static input tensors and returns a scalar loss. The optimiser must be
    created with ``capturable=True``. Warm-up steps run before the capture (CUDA graphs need
    them); their effect on the parameters and the optimiser state is undone, so the first
    replayed step starts from the same state as the eager step would. ``before_step`` runs
    between the backward and the optimiser step (the gradient clipping), inside the graph.
    """

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        opt: torch.optim.Optimizer,
        example: tuple[torch.Tensor, ...],
        warmup: int = 2,
        before_step: Callable[[], None] | None = None,
    ):
        self.static_in = tuple(t.detach().clone() for t in example)
        params = [p for g in opt.param_groups for p in g["params"]]
        saved_params = [p.detach().clone() for p in params]
        saved_state = _snapshot(opt)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                opt.zero_grad(set_to_none=True)
                loss_fn(*self.static_in).backward()
                if before_step is not None:
                    before_step()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        _restore(opt, params, saved_params, saved_state)
        opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = loss_fn(*self.static_in)
            self.static_loss.backward()
            if before_step is not None:
                before_step()
            opt.step()

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        for dst, src in zip(self.static_in, batch, strict=True):
            dst.copy_(src)
        self.graph.replay()
        return self.static_loss.detach().clone()


class GraphedIteration:
    """One iteration of ``solver`` on fixed-shape inputs, captured as a CUDA graph.

    ``run(y, mask, x0, n_iter, callback)`` copies a batch into the static buffers and replays
    the iteration ``n_iter`` times without host synchronisation (except in ``callback``). With
    ``grad_norm`` 'initial' or 'max' the first iteration, which sets the reference gradient
    size, runs eagerly.
    """

    def __init__(
        self,
        solver: nn.Module,
        cost: nn.Module,
        y: torch.Tensor,
        mask: torch.Tensor,
        x0: torch.Tensor,
    ):
        self.solver, self.cost = solver, cost
        self.y, self.mask, self.x = y.clone(), mask.clone(), x0.detach().clone()
        self.state = solver.init_state(self.x)
        self._prepare(x0)
        self.initial = solver.carries_norm
        with torch.no_grad():
            self.norm = self._first(x0)[2] if self.initial else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                solver.iterate(cost, self.x.clone(), self.y, self.mask, self.state, self.norm)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.x_out, self.state_out, self.norm_out = solver.iterate(
                cost, self.x, self.y, self.mask, self.state, self.norm
            )

    def _prepare(self, x0) -> None:
        """Per-batch set-up outside the graph (FSGD's curvature-based steps, updated in place)."""
        prepare = getattr(self.solver, "prepare", None)
        if prepare is not None:
            prepare(self.cost, x0, self.y, self.mask)

    def _first(self, x0):
        return self.solver.iterate(
            self.cost, x0.detach().clone(), self.y, self.mask, self.solver.init_state(x0), None
        )

    @torch.no_grad()
    def run(self, y, mask, x0, n_iter: int, callback=None) -> torch.Tensor:
        self.y.copy_(y)
        self.mask.copy_(mask)
        self.x.copy_(x0)
        _copy(self.state, self.solver.init_state(x0))
        self._prepare(x0)
        start = 0
        if self.initial and n_iter > 0:
            x, state, norm = self._first(x0)
            self.norm.copy_(norm)
            self.x.copy_(x)
            _copy(self.state, state)
            start = 1
            if callback is not None:
                callback(1, self.x.detach())
        for k in range(start, n_iter):
            self.graph.replay()
            self.x.copy_(self.x_out)
            _copy(self.state, self.state_out)
            if self.norm is not None:  # 'max': the largest gradient RMS so far
                self.norm.copy_(self.norm_out)
            if callback is not None:
                callback(k + 1, self.x.detach())
        return self.x.detach().clone()


def _copy(dst, src) -> None:
    """Copy a (nested tuple of) tensor(s) into another in place."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, (tuple, list)):
        for d, s in zip(dst, src, strict=True):
            _copy(d, s)


class FastSolve:
    """Solves batches with ``GraphedIteration``s, one captured per batch shape."""

    def __init__(self, model: nn.Module):
        self.model, self.graphs = model, {}

    def __call__(self, y, mask, n_iter: int, callback=None) -> torch.Tensor:
        x0 = self.model.initial_state(y, mask)
        key = tuple(y.shape)
        if key not in self.graphs:
            self.graphs[key] = GraphedIteration(self.model.solver, self.model.cost, y, mask, x0)
        return self.graphs[key].run(y, mask, x0, n_iter, callback)
