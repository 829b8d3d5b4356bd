"""``data.<system>``: the truth simulation and the twin-experiment sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dynamics import SYSTEMS
from .base import _check


@dataclass
class ObsConfig:
    """Observation operator: which entries of each window are observed, and the noise."""

    every: int = 8  # observation time step, in model steps
    components: list[int] | None = None  # observed components (fixed set), or
    n_random: int | None = None  # number of components drawn at random per observation time
    shared: bool = True  # one random draw per observation time for the whole split
    blank_ends: int = 0  # no observation in the first and last ``blank_ends`` steps
    noise_var: float = 2.0

    def check(self, where: str) -> None:
        _check(
            isinstance(self.every, int) and self.every >= 1,
            f"{where}.every",
            self.every,
            "must be an integer >= 1",
        )
        _check(
            (self.components is None) != (self.n_random is None),
            f"{where}.components",
            self.components,
            "set exactly one of components and n_random",
        )
        _check(self.noise_var >= 0, f"{where}.noise_var", self.noise_var, "must be >= 0")
        _check(self.blank_ends >= 0, f"{where}.blank_ends", self.blank_ends, "must be >= 0")


@dataclass
class DataConfig:
    """Truth simulation and twin-experiment sampling for one system (paper Sections 4.1-4.2)."""

    system: str = "l63"
    dt: float = 0.01
    x0: list[float] = field(default_factory=lambda: [8.0, 0.0, 30.0])
    perturb: list[float] | None = None  # [index, value] added to x0 (L96: [20, 0.01])
    spinup: float = 5.0
    n_steps: int = 20000
    substeps: int = 5  # RK4 steps of dt / substeps per step dt of the truth
    window: int = 200
    n_train: int = 10000
    n_val: int = 1000
    n_test: int = 2000
    train_range: list[int] = field(default_factory=lambda: [0, 10500])
    val_range: list[int] = field(default_factory=lambda: [10500, 12000])
    test_range: list[int] = field(default_factory=lambda: [15000, 20000])
    obs: ObsConfig = field(default_factory=ObsConfig)
    seed: int = 100

    def check(self, where: str) -> None:
        _check(self.system in SYSTEMS, f"{where}.system", self.system, f"expected one of {SYSTEMS}")
        _check(self.dt > 0, f"{where}.dt", self.dt, "must be positive")
        _check(
            isinstance(self.substeps, int) and self.substeps >= 1,
            f"{where}.substeps",
            self.substeps,
            "must be an integer >= 1",
        )
        _check(self.window >= 2, f"{where}.window", self.window, "must be >= 2")
        for split in ("train", "val", "test"):
            lo, hi = getattr(self, f"{split}_range")
            _check(
                0 <= lo and hi <= self.n_steps and hi - lo >= self.window,
                f"{where}.{split}_range",
                [lo, hi],
                f"must lie in [0, n_steps={self.n_steps}] and hold a window of {self.window}",
            )
            n = getattr(self, f"n_{split}")
            _check(
                isinstance(n, int) and n >= 1, f"{where}.n_{split}", n, "must be an integer >= 1"
            )
        if self.obs.n_random is not None:
            n_comp = len(self.x0)
            _check(
                1 <= self.obs.n_random <= n_comp,
                f"{where}.obs.n_random",
                self.obs.n_random,
                f"must lie in [1, {n_comp}]",
            )
