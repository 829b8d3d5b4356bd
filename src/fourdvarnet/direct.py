"""Direct learning for inverse problems, ``x_hat = CNN(y, Omega)``: the row the talk sets the
variational scheme against (row ``supervised-none-direct``).

No prior, no cost, no iteration: a U-Net maps the observations and their mask straight to the
state, trained on the reconstruction MSE against the truth (supervised). It uses the layout of
the GENN rows (``priors.LAYOUT``): for Lorenz-63 a 1-D network over time with the observations
and the mask of the 3 components as 6 channels; for Lorenz-96 a 2-D network over the image
(component, time) with 2 channels (observations, mask), its convolutions periodic along the
components. The U-Net halves time only, ``levels`` times (average pooling, as GENN's coarse
branch), and doubles the channels at each level; a transposed convolution brings each level
back and concatenates its skip connection. Windows whose length is not a multiple of
``2 ** levels`` are padded at the end with unobserved steps (zero observation, zero mask) and the
output is cut back to the window.

``DirectSolver`` wraps the U-Net in the solvers' call, ``solver(cost, x0, y, mask, n_iter,
callback=None)``, ignoring the cost, the initial state and ``n_iter`` (one pass), so the row
trains, is saved and evaluated like any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DirectConfig
from .layers import Conv, from_image, pointwise


def _block(dims: int, cin: int, cout: int, kernel: int) -> nn.Sequential:
    """Two 'same'-size convolutions with biases and ReLUs."""
    return nn.Sequential(
        Conv(dims, cin, cout, kernel, bias=True),
        nn.ReLU(),
        Conv(dims, cout, cout, kernel, bias=True),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """A U-Net over time (and, in 2-D, over components without pooling them).

    Input ``(batch, cin, time)`` (``dims=1``) or ``(batch, cin, component, time)`` (``dims=2``);
    output the same with ``cout`` channels, for any time length.
    """

    def __init__(self, dims: int, cin: int, cout: int, cfg: DirectConfig | None = None):
        super().__init__()
        cfg = cfg or DirectConfig()
        self.dims, self.levels = dims, cfg.levels
        widths = [cfg.width * 2**level for level in range(cfg.levels + 1)]
        ins = [cin, *widths[:-1]]
        self.down = nn.ModuleList(
            _block(dims, a, b, cfg.kernel) for a, b in zip(ins[:-1], widths[:-1])
        )
        self.bottom = _block(dims, ins[-1], widths[-1], cfg.kernel)
        stride = 2 if dims == 1 else (1, 2)
        self.pool = nn.AvgPool1d(2) if dims == 1 else nn.AvgPool2d((1, 2))
        up = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        self.up = nn.ModuleList(
            up(widths[i + 1], widths[i], stride, stride=stride) for i in range(cfg.levels)
        )
        self.merge = nn.ModuleList(
            _block(dims, 2 * widths[i], widths[i], cfg.kernel) for i in range(cfg.levels)
        )
        self.out = pointwise(dims, widths[0], cout, bias=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        length = h.shape[-1]
        h = F.pad(h, (0, -length % 2**self.levels))
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for i in reversed(range(self.levels)):
            h = self.merge[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        return self.out(h)[..., :length]


class DirectSolver(nn.Module):
    """``x_hat = UNet(y, Omega)`` in the solvers' call; ``callback(1, x_hat)`` is called once."""

    def __init__(self, dims: int, channels: int, cfg: DirectConfig | None = None):
        super().__init__()
        self.dims = dims
        cin = 2 * channels if dims == 1 else 2
        self.net = UNet(dims, cin, channels if dims == 1 else 1, cfg)

    def forward(self, cost, x0, y, mask, n_iter, callback=None, grad_last=0):
        """One pass of the U-Net (``n_iter`` and ``grad_last`` do not apply)."""
        stack = torch.cat if self.dims == 1 else torch.stack
        x_hat = from_image(self.net(stack([mask * y, mask], dim=1)), self.dims)
        if callback is not None:
            callback(1, x_hat.detach())
        return x_hat


def n_parameters(module: nn.Module) -> int:
    """Number of learnable parameters (weights and biases)."""
    return sum(p.numel() for p in module.parameters())
