"""Scores of the paper's Tables 1-2, in physical units (paper Section 4.1).

* R-score: mean squared error of the reconstruction against the truth, over all components and
  time steps (also over observed and unobserved entries separately);
* 4DVar-score: U_Phi(x_hat, y, Omega) with l1 = 0.01, l2 = 1 and Phi the true RK4 model, the same
  for every row (comparable across rows); ``fourdvar_score_own`` uses the row's own prior instead
  (the cost the row's solver actually sees, up to its weights);
* ODE-score: mean squared error of the row's own one-step prior on the truth, |x - Phi(x)|^2
  (with ``fourdvar_score_own``, left out for a row without a prior: the direct CNN);
* roughness: mean squared second difference in time of the reconstruction divided by that of the
  truth (1: as smooth as the dynamics; a sawtooth of the solver's steps gives values >> 1).

Inputs are normalised tensors ``(batch, component, time)``; ``std`` (the normalisation scale)
turns the squared errors back into physical units.
"""

from __future__ import annotations

import torch
from torch import nn

from .cost import VariationalCost, prior_term


def second_difference(x: torch.Tensor) -> torch.Tensor:
    """``x(t+1) - 2 x(t) + x(t-1)`` along time (the last dimension)."""
    return x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2]


class Scorer:
    """Accumulates the table scores over batches of the test set."""

    def __init__(
        self, true_prior: nn.Module, row_prior: nn.Module | None, std: float, lambdas=(0.01, 1.0)
    ):
        self.fourdvar = VariationalCost(true_prior, *lambdas)
        self.fourdvar_own = VariationalCost(row_prior, *lambdas) if row_prior is not None else None
        self.row_prior, self.std = row_prior, std
        keys = ("r", "r_obs", "r_unobs", "fourdvar", "fourdvar_own", "ode", "curv_hat", "curv")
        self.sums = {k: 0.0 for k in keys}
        self.counts = {"n": 0, "obs": 0.0, "unobs": 0.0}

    @torch.no_grad()
    def add(self, x_hat, x, y, mask) -> None:
        err = (x_hat - x) ** 2
        s = self.sums
        s["r"] += float(err.mean(dim=(1, 2)).sum())
        s["r_obs"] += float((err * mask).sum())
        s["r_unobs"] += float((err * (1 - mask)).sum())
        s["fourdvar"] += float(self.fourdvar(x_hat, y, mask).sum())
        if self.row_prior is not None:
            s["fourdvar_own"] += float(self.fourdvar_own(x_hat, y, mask).sum())
            s["ode"] += float(prior_term(x, self.row_prior).sum())
        s["curv_hat"] += float(second_difference(x_hat).pow(2).sum())
        s["curv"] += float(second_difference(x).pow(2).sum())
        self.counts["n"] += x.shape[0]
        self.counts["obs"] += float(mask.sum())
        self.counts["unobs"] += float((1 - mask).sum())

    def result(self) -> dict[str, float]:
        n, s, v = self.counts["n"], self.sums, self.std**2
        out = {
            "r_score": s["r"] / n * v,
            "r_score_observed": s["r_obs"] / max(self.counts["obs"], 1.0) * v,
            "r_score_unobserved": s["r_unobs"] / max(self.counts["unobs"], 1.0) * v,
            "fourdvar_score": s["fourdvar"] / n * v,
            "fourdvar_score_own": s["fourdvar_own"] / n * v,
            "ode_score": s["ode"] / n * v,
            "roughness": s["curv_hat"] / max(s["curv"], 1e-30),
        }
        if self.row_prior is None:
            del out["fourdvar_score_own"], out["ode_score"]
        return out
