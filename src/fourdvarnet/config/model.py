"""``model.<system>``: the priors Phi, the learned solvers Gamma and the direct CNN."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import _check, _check_kernel

UPSAMPLE = ("block", "linear")
#: How the learned solvers see ``g = grad_x U``, each sequence divided by an RMS: ``every``, its
#: RMS at this iteration (the direction only, so the step never shrinks); ``initial``, its RMS
#: at the first iteration of the solve; ``max``, the largest RMS of the solve so far (bounded
#: inputs that shrink as the solve converges); ``none``: the raw gradient.
GRAD_NORMS = ("every", "initial", "max", "none")


@dataclass
class GennConfig:
    """Two-scale GENN prior (Eq. 10): widths of the constrained and 1x1 layers."""

    width: int = 60  # output channels of the zero-centre convolution
    hidden: int = 30  # channels of the bilinear block
    kernel: int = 11  # kernel of the zero-centre convolution (odd)
    pool: int = 4  # time downsampling of the coarse branch
    head: bool = False  # branches end in ``hidden`` channels and share a 1x1 output layer
    # coarse branch back to full resolution: "block" (the paper's transposed convolution, kernel
    # = stride = pool: piecewise in blocks of ``pool`` steps) or "linear" (1x1 layer, then linear
    # interpolation; its zero centre spans three coarse steps to keep the constraint)
    upsample: str = "linear"

    def check(self, where: str) -> None:
        _check_kernel(self.kernel, f"{where}.kernel")
        for k in ("width", "hidden", "pool"):
            _check(getattr(self, k) >= 1, f"{where}.{k}", getattr(self, k), "must be >= 1")
        _check(self.upsample in UPSAMPLE, f"{where}.upsample", self.upsample, f"one of {UPSAMPLE}")
        if self.upsample == "linear":  # three centre taps masked: a kernel of 3 would keep none
            _check(self.kernel >= 5, f"{where}.kernel", self.kernel, "must be >= 5 with linear")


@dataclass
class DirectConfig:
    """U-Net of the direct row ``x_hat = CNN(y, Omega)``: ``levels`` halvings of time, with
    ``width`` channels at full resolution, doubled at each level, two convolutions per level."""

    width: int = 8
    levels: int = 2
    kernel: int = 5  # odd

    def check(self, where: str) -> None:
        _check_kernel(self.kernel, f"{where}.kernel")
        _check(self.width >= 1, f"{where}.width", self.width, "must be >= 1")
        _check(self.levels >= 0, f"{where}.levels", self.levels, "must be >= 0")


@dataclass
class ModelConfig:
    """Architecture of the priors Phi, the learned solvers Gamma and the direct CNN."""

    genn: GennConfig = field(default_factory=GennConfig)
    direct: DirectConfig = field(default_factory=DirectConfig)
    lstm_hidden: int = 5  # ConvLSTM hidden channels, as a multiple of the state channels
    conv_widths: list[int] = field(default_factory=lambda: [8, 16])  # aG-Conv, x channels
    kernel: int = 3  # kernel of the solver convolutions
    bound: float = 5.0  # aG-Conv update bounded by bound * atan(z / bound)
    grad_norm: str = "max"  # one of GRAD_NORMS
    init_step: float = 0.05  # initial scale of the learned solvers' output layers
    learn_step: bool = False  # a learned scale exp(s) of every solver step, s starting at 0

    def check(self, where: str) -> None:
        _check(
            self.grad_norm in GRAD_NORMS,
            f"{where}.grad_norm",
            self.grad_norm,
            f"expected one of {GRAD_NORMS}",
        )
        _check(self.kernel % 2 == 1, f"{where}.kernel", self.kernel, "must be odd")
        _check(self.bound > 0, f"{where}.bound", self.bound, "must be positive")
