"""Solvers Gamma: iterative minimisers of U_Phi that all start from the interpolated observations.

Every solver has the same call, ``solver(cost, x0, y, mask, n_iter, callback=None) -> x_hat``.
The gradient-based ones differ only in ``update(x, g, state)``, the map from the state and the
gradient ``g = grad_x U_Phi(x, y, Omega)`` (from autograd) to the next state:

* ``FSGD``: fixed-step gradient descent, ``x <- x - alpha g`` (paper Eq. 5), with ``alpha`` given
  or taken from the cost's curvature (``step='auto'``: a fraction of the stability limit
  ``2 / lambda_max``, the largest Hessian eigenvalue by power iteration);
* ``LSTMSolver`` (aG-LSTM, Eq. 11): a ConvLSTM fed with the normalised gradient,
  ``x <- x - L(h)``;
* ``ConvSolver`` (aG-Conv, Eq. 12): a CNN over ``cat(previous update, normalised gradient)``,
  with an atan-bounded step;
* ``LBFGSSolver`` (module ``lbfgs``): weak-constraint 4D-Var minimised by L-BFGS, the classic
  baseline beside FSGD; each window has its own curvature memory and strong-Wolfe line search,
  so its result does not depend on the batch;
* ``FixedPointSolver`` (slides): ``x <- Phi(x)`` on the unobserved entries, observations
  re-imposed; it needs no gradient.

When called with gradients enabled (training), the gradient is taken with ``create_graph=True`` so
the training loss differentiates through the whole unrolled solver; otherwise each iteration is
detached and no graph is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import GRAD_NORMS, SOLVERS, ModelConfig
from .layers import Conv, from_image, pointwise, to_image
from .lbfgs import LBFGSSolver
from .priors import LAYOUT

Callback = Callable[[int, torch.Tensor], None]


def rms(g: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Root mean square of each sequence of ``g``, shape ``(batch, 1, 1)``."""
    return (g.pow(2).mean(dim=(1, 2), keepdim=True) + eps).sqrt()


def normalise_gradient(g: torch.Tensor, norm: torch.Tensor | None, mode: str):
    """The gradient as the learned solvers see it (``GRAD_NORMS``): ``g`` over an RMS per
    sequence, and that RMS to carry to the next iteration (``norm``, None before the first).
    ``every``: this iteration's RMS; ``initial``: the first iteration's; ``max``: the largest
    so far; ``none``: ``g`` as it is. The one home of the normalisation: the eager solvers and
    the CUDA-graph iterations (``fast.GraphedIteration``, through ``Solver.iterate``) use it."""
    if mode == "none":
        return g, norm
    size = rms(g)
    if norm is None or mode == "every":
        norm = size
    elif mode == "max":
        norm = torch.maximum(norm, size)
    return g / norm, norm


class Solver(nn.Module):
    """Base of the gradient-based solvers: the unrolled loop and the gradient normalisation."""

    def __init__(self, grad_norm: str = "max", learn_step: bool = False):
        super().__init__()
        if grad_norm not in GRAD_NORMS:
            raise ValueError(f"unknown grad_norm {grad_norm!r}; expected one of {GRAD_NORMS}")
        self.grad_norm = grad_norm
        #: with ``learn_step``, every step ``update`` takes is scaled by ``exp(log_step)``
        self.log_step = nn.Parameter(torch.zeros(())) if learn_step else None

    @property
    def carries_norm(self) -> bool:
        """Whether the normalising RMS of one iteration is carried to the next (``initial``,
        ``max``), so that a replayed iteration needs it as an input."""
        return self.grad_norm in ("initial", "max")

    def init_state(self, x0: torch.Tensor):
        return None

    def update(self, x: torch.Tensor, g: torch.Tensor, state):
        raise NotImplementedError

    def iterate(self, cost: nn.Module, x, y, mask, state, norm):
        """One iteration: gradient of U_Phi at ``x``, normalised, then the update.

        Returns ``(x, state, norm)``; ``norm`` is the gradient RMS in use (None before the
        first iteration). With gradients enabled the step stays differentiable (double backward).
        """
        train = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.requires_grad_(True)
            u = cost(x, y, mask).sum()
            (g,) = torch.autograd.grad(u, x, create_graph=train)
        g, norm = normalise_gradient(g, norm, self.grad_norm)
        x = x if train else x.detach()
        new, state = self.update(x, g, state)
        if self.log_step is not None:
            new = x + self.log_step.exp() * (new - x)
        return new, state, norm

    def forward(
        self,
        cost: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        n_iter: int,
        callback: Callback | None = None,
        grad_last: int = 0,
    ) -> torch.Tensor:
        """``n_iter`` iterations from ``x0``. With gradients enabled and ``grad_last`` > 0 only
        the last ``grad_last`` iterations are differentiable (truncated back-propagation):
        the earlier ones run without a graph, their output detached."""
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        x = x0.detach()
        state, norm = self.init_state(x), None
        train = torch.is_grad_enabled()
        for k in range(n_iter):
            tracked = train and (not grad_last or k >= n_iter - grad_last)
            with torch.set_grad_enabled(tracked):
                x, state, norm = self.iterate(cost, x, y, mask, state, norm)
            if callback is not None:
                callback(k + 1, x.detach())
        return x


def largest_hessian_eigenvalue(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_iter: int = 50, seed: int = 0
) -> torch.Tensor:
    """Largest eigenvalue of the Hessian of each sequence's ``fn`` at ``x``, by power iteration.

    ``fn(x)`` returns one scalar per sequence (shape ``(batch,)``) that depends on its own
    sequence only, so one Hessian-vector product of ``fn(x).sum()`` (double backward) applies
    every sequence's Hessian at once. Returns ``(batch,)``: the Rayleigh quotient of the last
    iterate, which for a positive semi-definite Hessian increases to ``lambda_max``. The start
    vector is the same pseudo-random pattern for every sequence, so the result does not depend
    on the batch a sequence sits in.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape[1:], generator=gen, dtype=x.dtype).to(x.device).expand_as(x)
    lam = x.new_zeros(x.shape[0])
    for _ in range(n_iter):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (x.dim() - 1))
        (hv,) = torch.autograd.grad(g, x, v, retain_graph=True)
        lam = (hv * v).flatten(1).sum(dim=1)
        v = hv
    return lam.detach()


class FSGD(Solver):
    """Fixed-step gradient descent on U_Phi (Eq. 5); the step applies to each sequence's cost.

    ``step='auto'`` takes, for each sequence, ``fraction * 2 / lambda_max`` with ``lambda_max``
    the largest Hessian eigenvalue of its cost at the initial state (gradient descent on a
    quadratic converges for steps below ``2 / lambda_max``). ``prepare`` sets the steps of a
    batch (``forward`` calls it); they stay in one tensor per batch size, updated in place, so a
    captured CUDA graph of ``update`` reads the current batch's steps. The steps of the last
    solve are in ``last_step``.
    """

    def __init__(self, step: float | str, fraction: float = 0.5):
        super().__init__(grad_norm="none")
        if step != "auto" and not (isinstance(step, (int, float)) and step > 0):
            raise ValueError(f"FSGD step must be positive or 'auto', got {step!r}")
        if not 0 < fraction < 1:
            raise ValueError(f"FSGD step fraction must lie in (0, 1), got {fraction}")
        self.step = step if step == "auto" else float(step)
        self.fraction = float(fraction)
        self.last_step: torch.Tensor | None = None
        self._steps: dict[tuple, torch.Tensor] = {}

    def prepare(self, cost, x0, y, mask) -> None:
        """Set the per-window steps of the batch ``x0`` (``last_step``, shape (batch, 1, 1))."""
        if self.step == "auto":
            lam = largest_hessian_eigenvalue(lambda z: cost(z, y, mask), x0)
            step = (2.0 * self.fraction / lam.clamp_min(1e-12)).view(-1, 1, 1)
        else:
            step = x0.new_full((x0.shape[0], 1, 1), self.step)
        key = (x0.shape[0], x0.device, x0.dtype)
        if key in self._steps:
            self._steps[key].copy_(step)
        else:
            self._steps[key] = step
        self.last_step = self._steps[key]

    def forward(self, cost, x0, y, mask, n_iter, callback=None):
        self.prepare(cost, x0, y, mask)
        return super().forward(cost, x0, y, mask, n_iter, callback)

    def update(self, x, g, state):
        return x - self._steps[(x.shape[0], x.device, x.dtype)] * g, state


class ConvLSTMCell(nn.Module):
    def __init__(self, dims: int, cin: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.gates = Conv(dims, cin + hidden, 4 * hidden, kernel, bias=True)

    def forward(self, inp, h, c):
        i, f, o, g = self.gates(torch.cat([inp, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class LSTMSolver(Solver):
    """aG-LSTM (Eq. 11): a ConvLSTM over the normalised gradient, then a 1x1 map to the state."""

    def __init__(
        self,
        dims: int,
        channels: int,
        hidden_factor: int = 5,
        kernel: int = 3,
        grad_norm: str = "max",
        init_step: float = 0.05,
        learn_step: bool = False,
    ):
        super().__init__(grad_norm, learn_step)
        self.dims = dims
        cin = channels if dims == 1 else 1
        self.cell = ConvLSTMCell(dims, cin, hidden_factor * cin, kernel)
        self.out = pointwise(dims, hidden_factor * cin, cin)
        with torch.no_grad():  # start with small steps
            self.out.weight.mul_(init_step)

    def init_state(self, x0):
        h = to_image(x0, self.dims)
        shape = (h.shape[0], self.cell.hidden, *h.shape[2:])
        return h.new_zeros(shape), h.new_zeros(shape)

    def update(self, x, g, state):
        h, c = self.cell(to_image(g, self.dims), *state)
        return x - from_image(self.out(h), self.dims), (h, c)


class ConvSolver(Solver):
    """aG-Conv (Eq. 12): ``s <- g + M(C(cat(s, g)))``, ``x <- x - b atan(A(s) / b)``.

    ``C`` is three kernel-3 convolutions with ReLUs (2C -> 8C -> 16C -> C channels), ``M`` a 1x1
    convolution and ``A`` a 1x1 convolution started at the identity; the atan bounds each step to
    ``b pi / 2`` in normalised units. No layer has a bias, as in the authors' solver: a zero
    gradient and a zero previous update give a zero step.
    """

    def __init__(
        self,
        dims: int,
        channels: int,
        widths=(8, 16),
        kernel: int = 3,
        bound: float = 5.0,
        grad_norm: str = "max",
        init_step: float = 0.05,
        learn_step: bool = False,
    ):
        super().__init__(grad_norm, learn_step)
        self.dims, self.bound = dims, float(bound)
        cin = channels if dims == 1 else 1
        sizes = [2 * cin, *(w * cin for w in widths), cin]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [Conv(dims, a, b, kernel), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])
        self.mix = pointwise(dims, cin, cin)
        self.out = pointwise(dims, cin, cin)
        with torch.no_grad():  # start as normalised gradient descent with a small step
            self.mix.weight.zero_()
            self.out.weight.copy_(init_step * torch.eye(cin).reshape(self.out.weight.shape))

    def init_state(self, x0):
        return torch.zeros_like(to_image(x0, self.dims))

    def update(self, x, g, s):
        g = to_image(g, self.dims)
        s = g + self.mix(self.net(torch.cat([s, g], dim=1)))
        step = self.bound * torch.atan(self.out(s) / self.bound)
        return x - from_image(step, self.dims), s


class FixedPointSolver(nn.Module):
    """Fixed-point iterations ``x <- Omega y + (1 - Omega) Phi(x)`` (slides); no gradient."""

    def forward(self, cost, x0, y, mask, n_iter, callback=None):
        x = mask * y + (1 - mask) * x0
        for k in range(n_iter):
            x = mask * y + (1 - mask) * cost.prior(x)
            if callback is not None:
                callback(k + 1, x.detach())
        return x


def build_solver(
    name: str,
    system: str,
    model: ModelConfig | None = None,
    fsgd_step: float | str = 1.0,
    fsgd_fraction: float = 0.5,
) -> nn.Module:
    """The solver ``name`` ('fsgd', 'lbfgs', 'lstm', 'conv' or 'fixed_point') for ``system``."""
    model = model or ModelConfig()
    if system not in LAYOUT:
        raise ValueError(f"unknown system {system!r}; expected one of {tuple(LAYOUT)}")
    dims, channels = LAYOUT[system]
    if name == "fsgd":
        return FSGD(fsgd_step, fsgd_fraction)
    if name == "lbfgs":
        return LBFGSSolver()
    if name == "lstm":
        return LSTMSolver(
            dims, channels, model.lstm_hidden, model.kernel, model.grad_norm, model.init_step,
            model.learn_step,
        )  # fmt: skip
    if name == "conv":
        return ConvSolver(
            dims,
            channels,
            model.conv_widths,
            model.kernel,
            model.bound,
            model.grad_norm,
            model.init_step,
            model.learn_step,
        )
    if name == "fixed_point":
        return FixedPointSolver()
    raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")
