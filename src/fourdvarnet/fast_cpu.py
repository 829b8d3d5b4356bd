"""The fast path on the CPU: the learned solvers' gradient of U_Phi compiled by ``torch.compile``.

On the CPU a training step of a learned solver is compute-bound: each of its ``n_iter``
iterations takes ``g = grad_x U_Phi(x, y, Omega)`` by autograd (the prior's forward and
backward) and the training loss differentiates through all of them (double backward). The fast
path compiles that gradient into one fused graph per input shape (inductor, ``dynamic=False``);
the solver's own network and the gradient's normalisation stay eager (with inductor's float32
sum in the RMS, an L96 parameter gradient after 20 iterations was 1e-3 from float64, eager's
1e-5; with the RMS outside the graph the two paths agree to 1e-6). The gradient is written
with ``torch.func.grad``: a compiled region holding ``torch.autograd.grad`` fails at the
training's backward (aot_autograd does not support double backward), while ``func.grad`` is
traced into the forward graph, whose compiled backward is then the double backward. Compiling a
whole iteration or the whole unroll was measured slower than eager, so only the gradient is.

* ``enable(model)``/``disable(model)`` (or the block ``enabled(model)``): the model's learned
  solver takes its gradient from the compiled function (``Solver.grad_fn``), or the eager
  reference again;
* ``PaddedSolve``: solves batches padded to the size of the first one, so the short last batch
  of a split reuses the compiled shape instead of compiling another;
* ``wanted``: the ``cpu_fast`` setting (``auto``, ``on``, ``off``) resolved for one job.

A job compiles two graphs (the training step's with its backward, the no-grad solves'): 14-32 s
from a cold cache with an ODE prior, 2-5 s from inductor's on-disk cache, so ``auto`` runs it
only for jobs long enough to repay it (``MIN_ITERATIONS``), and only with an ODE prior (with a
GENN prior the compiled step was measured slower than eager). It gains 1.1-1.4x per training
step (docs/performance.md). The compiled function is one per process: every model, training,
validation and evaluation in the process shares its graphs (dynamo keys them on the input
shapes, the gradient mode and the cost's structure, not on the module instance). The results
equal the eager ones to float rounding (tests/test_fast.py). The solvers' convolutions keep
their layout: channels-last was measured and gave nothing on the whole step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn

from .config import CPU_FAST
from .priors import ODEPrior
from .solvers import ConvSolver, LSTMSolver

#: ``auto`` turns the fast path on for jobs of at least this many solver iterations on a batch
#: (a training step of ``n_iter`` iterations counts ``n_iter``): at the 3-25 ms saved per batch
#: iteration (docs/performance.md), they repay the 14-32 s of cold compiles of a job.
MIN_ITERATIONS = 20_000

#: The ``torch.compile`` backend of the fast path (the tests also use ``aot_eager``: the same
#: traced graphs and autograd, run by eager kernels, without inductor's compile times).
BACKEND = "inductor"

_compiled: dict[str, Callable] = {}  # one compiled function per backend and process


def _gradient(cost: nn.Module, x, y, mask):
    return torch.func.grad(lambda z: cost(z, y, mask).sum())(x)


def compiled_gradient(cost: nn.Module, x, y, mask, backend: str = BACKEND):
    """``g = grad_x U_Phi(x, y, Omega)`` (of the sum over the batch) by the compiled function.

    Differentiable once (the training's backward) when gradients are enabled. There ``x`` is
    always made to require grad (as the eager code does), so that the first iteration of an
    unroll, from a detached initial state, runs the same compiled graph as the others.
    """
    fn = _compiled.get(backend)
    if fn is None:
        fn = _compiled[backend] = torch.compile(_gradient, backend=backend, dynamic=False)
    if torch.is_grad_enabled() and not x.requires_grad:
        x = x.detach().requires_grad_(True)
    return fn(cost, x, y, mask)


def applies(solver: nn.Module) -> bool:
    """The fast path serves the learned solvers (aG-Conv, aG-LSTM)."""
    return isinstance(solver, (ConvSolver, LSTMSolver))


@functools.cache
def compiler_available() -> bool:
    """Whether inductor finds the C++ compiler it builds its CPU kernels with."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure means: no compiled path
        return False
    return True


def wanted(setting: str, device: torch.device | str, model: nn.Module, iterations: int) -> bool:
    """Whether a job runs the CPU fast path: ``off``: no; ``on``: for a learned solver on the
    CPU; ``auto``: besides, only with an ODE prior (RK4, Euler: a GENN prior's compiled
    gradient was measured 0.5-1.0x, slower) and a C++ compiler, for a job of at least
    ``MIN_ITERATIONS`` solver iterations on a batch (``iterations``)."""
    if setting not in CPU_FAST:
        raise ValueError(f"unknown cpu_fast setting {setting!r}; expected one of {CPU_FAST}")
    if setting == "off" or torch.device(device).type != "cpu" or not applies(model.solver):
        return False
    if setting == "on":
        return True
    ode = isinstance(model.prior, ODEPrior)
    return ode and iterations >= MIN_ITERATIONS and compiler_available()


def enable(model: nn.Module, backend: str = BACKEND) -> None:
    """From now on ``model``'s learned solver takes its gradient from the compiled function
    (until ``disable``; an error in between leaves it on, which changes results by rounding
    only)."""
    if applies(model.solver):
        model.solver.grad_fn = functools.partial(compiled_gradient, backend=backend)


def disable(model: nn.Module) -> None:
    """Back to the eager reference gradient."""
    if applies(model.solver):
        model.solver.grad_fn = None


@contextlib.contextmanager
def enabled(model: nn.Module, on: bool = True, backend: str = BACKEND):
    """``enable`` within the block (when ``on``), ``disable`` after it, also on an error."""
    if not on:
        yield
        return
    enable(model, backend)
    try:
        yield
    finally:
        disable(model)


class PaddedSolve:
    """``model(y, mask, n_iter, callback)`` with a batch smaller than the first one padded to
    its size (repeating its last window; the windows are solved independently, so the padding
    changes nothing in the others), so that a split's short last batch reuses the compiled
    shape. ``callback(k, x)`` sees the real windows only."""

    def __init__(self, model: nn.Module):
        self.model, self.size = model, None

    def __call__(self, y, mask, n_iter: int, callback=None) -> torch.Tensor:
        n = len(y)
        if self.size is None:
            self.size = n
        if n >= self.size:
            return self.model(y, mask, n_iter, callback)
        extra = self.size - n
        y = torch.cat([y, y[-1:].expand(extra, *y.shape[1:])])
        mask = torch.cat([mask, mask[-1:].expand(extra, *mask.shape[1:])])
        inner = None if callback is None else (lambda k, x: callback(k, x[:n]))
        return self.model(y, mask, n_iter, inner)[:n]
