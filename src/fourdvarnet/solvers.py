"""Solvers Gamma: iterative minimisers of U_Phi that all start from the interpolated observations.

Every solver has the same call, ``solver(cost, x0, y, mask, n_iter, callback=None) -> x_hat``.
The gradient-based ones differ only in ``update(x, g, state)``, the map from the state and the
gradient ``g = grad_x U_Phi(x, y, Omega)`` (from autograd) to the next state:

* ``FSGD``: fixed-step gradient descent, ``x <- x - alpha g`` (paper Eq. 5);
* ``LSTMSolver`` (aG-LSTM, Eq. 11): a ConvLSTM fed with the normalised gradient,
  ``x <- x - L(h)``;
* ``ConvSolver`` (aG-Conv, Eq. 12): a CNN over ``cat(previous update, normalised gradient)``,
  with an atan-bounded step;
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

from .config import SOLVERS, ModelConfig
from .layers import Conv, from_image, pointwise, to_image
from .priors import LAYOUT

Callback = Callable[[int, torch.Tensor], None]


def rms(g: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Root mean square of each sequence of ``g``, shape ``(batch, 1, 1)``."""
    return (g.pow(2).mean(dim=(1, 2), keepdim=True) + eps).sqrt()


class Solver(nn.Module):
    """Base of the gradient-based solvers: the unrolled loop and the gradient normalisation."""

    def __init__(self, grad_norm: str = "every"):
        super().__init__()
        if grad_norm not in ("initial", "every", "none"):
            raise ValueError(f"unknown grad_norm {grad_norm!r}; expected initial, every or none")
        self.grad_norm = grad_norm

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
        if self.grad_norm == "every" or (self.grad_norm == "initial" and norm is None):
            norm = rms(g)
        if self.grad_norm != "none":
            g = g / norm
        x, state = self.update(x if train else x.detach(), g, state)
        return x, state, norm

    def forward(
        self,
        cost: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        n_iter: int,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        x = x0.detach()
        state, norm = self.init_state(x), None
        for k in range(n_iter):
            x, state, norm = self.iterate(cost, x, y, mask, state, norm)
            if callback is not None:
                callback(k + 1, x.detach())
        return x


class FSGD(Solver):
    """Fixed-step gradient descent on U_Phi (Eq. 5); the step applies to each sequence's cost."""

    def __init__(self, step: float):
        super().__init__(grad_norm="none")
        if not step > 0:
            raise ValueError(f"FSGD step must be positive, got {step}")
        self.step = float(step)

    def update(self, x, g, state):
        return x - self.step * g, state


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
        grad_norm: str = "every",
        init_step: float = 0.05,
    ):
        super().__init__(grad_norm)
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
    ``b pi / 2`` in normalised units.
    """

    def __init__(
        self,
        dims: int,
        channels: int,
        widths=(8, 16),
        kernel: int = 3,
        bound: float = 5.0,
        grad_norm: str = "every",
        init_step: float = 0.05,
    ):
        super().__init__(grad_norm)
        self.dims, self.bound = dims, float(bound)
        cin = channels if dims == 1 else 1
        sizes = [2 * cin, *(w * cin for w in widths), cin]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [Conv(dims, a, b, kernel, bias=True), nn.ReLU()]
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
    name: str, system: str, model: ModelConfig | None = None, fsgd_step: float = 1.0
) -> nn.Module:
    """The solver ``name`` ('fsgd', 'lstm', 'conv' or 'fixed_point') for ``system``."""
    model = model or ModelConfig()
    if system not in LAYOUT:
        raise ValueError(f"unknown system {system!r}; expected one of {tuple(LAYOUT)}")
    dims, channels = LAYOUT[system]
    if name == "fsgd":
        return FSGD(fsgd_step)
    if name == "lstm":
        return LSTMSolver(
            dims, channels, model.lstm_hidden, model.kernel, model.grad_norm, model.init_step
        )
    if name == "conv":
        return ConvSolver(
            dims,
            channels,
            model.conv_widths,
            model.kernel,
            model.bound,
            model.grad_norm,
            model.init_step,
        )
    if name == "fixed_point":
        return FixedPointSolver()
    raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")
