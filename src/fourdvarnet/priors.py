"""Priors Phi of the variational cost: one torch module interface, state in, same shape out.

Every prior maps a normalised state sequence ``x`` of shape ``(batch, component, time)`` to
``Phi(x)`` of the same shape:

* ``ODEPrior`` (``rk4``/``euler``): ``Phi(x)(t)`` is one integration step of the ODE from
  ``x(t - dt)`` (paper Eqs. 7-8), ``Phi(x)(t0) = x(t0)``; parameters are learnable and start at
  the true values (L63: sigma, rho, beta; L96: the 9-parameter bilinear stencil form).
* ``GENN``: the two-scale constrained CNN of Eq. (10), ``Phi(x) = Up(Phi1(Dw(x))) + Phi2(x)``,
  whose first convolutions have a zero centre, so ``Phi(x)(s)`` does not depend on ``x(s)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PRIORS, GennConfig, ModelConfig
from .dynamics import TRUE_PARAMS, euler_step, lorenz63, rk4_step
from .layers import Conv, from_image, pointwise, to_image

#: Layout of each system's state for the convolutional modules: (dims, channels).
LAYOUT = {"l63": (1, 3), "l96": (2, 1)}


class ODEPrior(nn.Module):
    """One step of an explicit scheme of the system's ODE, with learnable parameters.

    Works in physical units inside: the normalised input is decoded with ``mean``/``std``,
    integrated one step of ``dt``, and encoded back.
    """

    def __init__(
        self, system: str, dt: float, scheme: str = "rk4", mean: float = 0.0, std: float = 1.0
    ):
        super().__init__()
        if scheme not in ("rk4", "euler"):
            raise ValueError(f"unknown integration scheme {scheme!r}; expected 'rk4' or 'euler'")
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        self.system, self.dt, self.scheme = system, float(dt), scheme
        self.mean, self.std = float(mean), float(std)
        if system == "l63":
            p = TRUE_PARAMS["l63"]
            self.sigma = nn.Parameter(torch.tensor(p["sigma"]))
            self.rho = nn.Parameter(torch.tensor(p["rho"]))
            self.beta = nn.Parameter(torch.tensor(p["beta"]))
        elif system == "l96":
            # dx_i = (sum_o a_o x_{i+o}, o=-2..2) (sum_o b_o x_{i+o}, o=-1..1) - x_i + F
            self.stencil_a = nn.Parameter(torch.tensor([-1.0, 0.0, 0.0, 1.0, 0.0]))
            self.stencil_b = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))
            self.forcing = nn.Parameter(torch.tensor(TRUE_PARAMS["l96"]["forcing"]))
        else:
            raise ValueError(f"unknown system {system!r}; expected 'l63' or 'l96'")

    def tendency(self, X: torch.Tensor) -> torch.Tensor:
        """dX/dt in physical units, components along dim 1."""
        if self.system == "l63":
            return lorenz63(X, self.sigma, self.rho, self.beta, axis=1)
        a = sum(w * torch.roll(X, -o, dims=1) for w, o in zip(self.stencil_a, range(-2, 3)))
        b = sum(w * torch.roll(X, -o, dims=1) for w, o in zip(self.stencil_b, range(-1, 2)))
        return a * b - X + self.forcing

    def step(self, X: torch.Tensor) -> torch.Tensor:
        scheme = rk4_step if self.scheme == "rk4" else euler_step
        return scheme(self.tendency, X, self.dt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        X = x[..., :-1] * self.std + self.mean
        nxt = (self.step(X) - self.mean) / self.std
        return torch.cat([x[..., :1], nxt], dim=-1)


class Bilinear(nn.Module):
    """``cat(a(h), b(h) * c(h))`` with 1x1 convolutions a, b, c: doubles the channels."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.a, self.b, self.c = (pointwise(dims, channels, channels) for _ in range(3))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(h), self.b(h) * self.c(h)], dim=1)


class GENNBranch(nn.Sequential):
    """Zero-centre convolution, then 1x1 layers with a bilinear block (one scale of Eq. 10)."""

    def __init__(self, dims: int, cin: int, cfg: GennConfig, cout: int, centre_width: int = 1):
        super().__init__(
            Conv(dims, cin, cfg.width, cfg.kernel, centre_zero=True, centre_width=centre_width),
            nn.ReLU(),
            pointwise(dims, cfg.width, cfg.hidden),
            Bilinear(dims, cfg.hidden),
            pointwise(dims, 2 * cfg.hidden, cout),
        )


class GENN(nn.Module):
    """Two-scale Gibbs Energy Neural Network prior (paper Eq. 10); no biases.

    The coarse branch average-pools time by ``pool``, applies a branch and upsamples; the fine
    branch works at full resolution. The zero-centre masks of the first convolutions make
    ``Phi(x)(s)`` independent of ``x(s)``, for every weight value.

    Upsampling ``block`` (the paper's) is a transposed convolution with kernel = stride =
    ``pool``: each fine step gets only its own coarse step's output, which excludes its own
    block, and the output is piecewise in blocks. ``linear`` interpolates between neighbouring
    coarse steps (smooth across blocks), so a fine step gets the outputs of three coarse steps:
    the coarse convolution then masks three centre taps in time, which keeps the constraint.
    """

    def __init__(self, dims: int, channels: int, cfg: GennConfig | None = None):
        super().__init__()
        cfg = cfg or GennConfig()
        self.dims, self.pool = dims, cfg.pool
        cin = channels if dims == 1 else 1
        mid = cfg.hidden if cfg.head else cin
        stride = cfg.pool if dims == 1 else (1, cfg.pool)
        self.down = nn.AvgPool1d(cfg.pool) if dims == 1 else nn.AvgPool2d((1, cfg.pool))
        self.linear, self.scale = cfg.upsample == "linear", stride
        self.coarse = GENNBranch(dims, cin, cfg, cfg.hidden, centre_width=3 if self.linear else 1)
        if self.linear:
            self.up = pointwise(dims, cfg.hidden, mid)
        else:
            up = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
            self.up = up(cfg.hidden, mid, stride, stride=stride, bias=False)
        self.fine = GENNBranch(dims, cin, cfg, mid)
        self.head = pointwise(dims, cfg.hidden, cin) if cfg.head else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.pool:
            raise ValueError(
                f"GENN needs a sequence length divisible by pool={self.pool}, got {x.shape[-1]}"
            )
        h = to_image(x, self.dims)
        return from_image(self.head(self._coarse(h) + self.fine(h)), self.dims)

    def _coarse(self, h: torch.Tensor) -> torch.Tensor:
        """The coarse branch, back at full resolution (before the output layer)."""
        coarse = self.up(self.coarse(self.down(h)))
        if self.linear:
            mode = "linear" if self.dims == 1 else "bilinear"
            coarse = F.interpolate(coarse, scale_factor=self.scale, mode=mode, align_corners=False)
        return coarse

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coarse, fine)``: the two branches' parts of ``Phi(x)``, which is their sum (the
        output layer is linear and bias-free)."""
        h = to_image(x, self.dims)
        return tuple(from_image(self.head(b), self.dims) for b in (self._coarse(h), self.fine(h)))


def build_prior(
    name: str,
    system: str,
    dt: float,
    mean: float = 0.0,
    std: float = 1.0,
    model: ModelConfig | None = None,
) -> nn.Module:
    """The prior ``name`` ('rk4', 'euler' or 'genn') for ``system``."""
    if name in ("rk4", "euler"):
        return ODEPrior(system, dt, name, mean, std)
    if name == "genn":
        if system not in LAYOUT:
            raise ValueError(f"unknown system {system!r}; expected one of {tuple(LAYOUT)}")
        return GENN(*LAYOUT[system], (model or ModelConfig()).genn)
    if name == "none":
        raise ValueError("prior 'none' (the direct row, x_hat = CNN(y)) has no Phi to build")
    raise ValueError(f"unknown prior {name!r}; expected one of {PRIORS}")


def true_prior(system: str, dt: float, mean: float = 0.0, std: float = 1.0) -> ODEPrior:
    """The RK4 prior with the true parameters, frozen (used by the 4DVar-score and FSGD)."""
    prior = ODEPrior(system, dt, "rk4", mean, std)
    prior.requires_grad_(False)
    return prior
