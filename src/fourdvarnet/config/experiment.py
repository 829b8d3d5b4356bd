"""One table row (system x scheme x prior x solver x seed) and its name."""

from __future__ import annotations

from dataclasses import dataclass

from ..dynamics import SYSTEMS
from .base import _check

PRIORS = ("rk4", "euler", "genn", "none")
SOLVERS = ("fsgd", "lbfgs", "enks", "bayes", "lstm", "conv", "fixed_point", "direct")
SCHEMES = ("none", "unsupervised", "supervised")


@dataclass
class Experiment:
    """One table row: system x learning scheme x prior x solver x seed."""

    system: str
    scheme: str
    prior: str
    solver: str
    seed: int = 0

    def check(self, where: str = "experiment") -> None:
        """The names alone; which combinations make a row is the registry's (``rows.kind_of``)."""
        _check(self.system in SYSTEMS, f"{where}.system", self.system, f"expected one of {SYSTEMS}")
        _check(self.scheme in SCHEMES, f"{where}.scheme", self.scheme, f"expected one of {SCHEMES}")
        _check(self.prior in PRIORS, f"{where}.prior", self.prior, f"expected one of {PRIORS}")
        _check(self.solver in SOLVERS, f"{where}.solver", self.solver, f"expected one of {SOLVERS}")

    @property
    def name(self) -> str:
        return f"{self.system}/{self.scheme}-{self.prior}-{self.solver}/seed{self.seed}"
