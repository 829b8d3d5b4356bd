"""Convolutions shared by the priors and the solvers.

States have the layout ``(batch, component, time)``. With ``dims=1`` (Lorenz-63) a convolution
runs over time with the components as channels. With ``dims=2`` (Lorenz-96) the state is an image
``(batch, 1, component, time)`` and a convolution runs over (component, time), periodic along
the component axis and zero-padded in time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def to_image(x: torch.Tensor, dims: int) -> torch.Tensor:
    return x if dims == 1 else x.unsqueeze(1)


def from_image(h: torch.Tensor, dims: int) -> torch.Tensor:
    return h if dims == 1 else h.squeeze(1)


def pointwise(dims: int, cin: int, cout: int, bias: bool = False) -> nn.Module:
    """A 1x1 convolution."""
    return (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, 1, bias=bias)


class Conv(nn.Module):
    """A 'same'-size convolution, periodic over components in 2-D.

    With ``centre_zero`` the kernel's centre tap is masked to zero at every forward pass, so the
    output at a position does not depend on the input at that position (the GENN constraint);
    ``centre_width`` (odd) widens the masked centre along time to that many taps, so the output
    depends on no input within ``centre_width // 2`` steps of its own.
    """

    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        kernel: int,
        bias: bool = False,
        centre_zero: bool = False,
        centre_width: int = 1,
    ):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        if centre_width % 2 == 0 or not 1 <= centre_width <= kernel:
            raise ValueError(
                f"centre_width must be odd and at most kernel={kernel}, got {centre_width}"
            )
        self.dims, self.pad = dims, kernel // 2
        size = (kernel,) * dims
        self.weight = nn.Parameter(torch.empty(cout, cin, *size))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        ref = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, kernel, bias=bias)
        with torch.no_grad():  # PyTorch's default initialisation
            self.weight.copy_(ref.weight)
            if bias:
                self.bias.copy_(ref.bias)
        if centre_zero:
            mask = torch.ones(size)
            half = centre_width // 2
            mask[(self.pad,) * (dims - 1) + (slice(self.pad - half, self.pad + half + 1),)] = 0.0
            self.register_buffer("centre_mask", mask)
        else:
            self.centre_mask = None

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        return w if self.centre_mask is None else w * self.centre_mask

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if self.dims == 1:
            return F.conv1d(F.pad(h, (p, p)), self.effective_weight(), self.bias)
        if p:
            h = torch.cat([h[..., -p:, :], h, h[..., :p, :]], dim=-2)  # periodic components
            h = F.pad(h, (p, p, 0, 0))  # zeros in time
        return F.conv2d(h, self.effective_weight(), self.bias)
