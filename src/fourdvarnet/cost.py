"""The variational cost U_Phi of the paper, Eq. (4): one implementation used everywhere.

    U_Phi(x, y, Omega) = l1 * ||x - y||^2_Omega + l2 * ||x - Phi(x)||^2

Each norm is a mean: the observation term averages over the observed entries of a sequence, the
prior term over all its entries. The paper writes sums; means make ``l1`` and ``l2`` comparable
across systems and window lengths (they are the authors' convention too). The cost is returned
per sequence, shape ``(batch,)``, so the gradient of ``U.sum()`` for one sequence does not depend
on the batch it sits in.
"""

from __future__ import annotations

import torch
from torch import nn


def observation_term(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||x - y||^2_Omega``: mean squared misfit over the observed entries, per sequence."""
    n_obs = mask.sum(dim=(1, 2)).clamp(min=1.0)
    return (mask * (x - y) ** 2).sum(dim=(1, 2)) / n_obs


def prior_term(x: torch.Tensor, prior: nn.Module) -> torch.Tensor:
    """``||x - Phi(x)||^2``: mean squared prior residual over all entries, per sequence."""
    return ((x - prior(x)) ** 2).mean(dim=(1, 2))


class VariationalCost(nn.Module):
    """U_Phi with prior ``Phi`` and weights ``l1 = a_obs**2``, ``l2 = a_prior**2``.

    The weights are stored through their square roots so that they stay non-negative when they
    are learned (supervised training); ``learn_lambdas=False`` freezes them.
    """

    def __init__(
        self, prior: nn.Module, lambda_obs: float, lambda_prior: float, learn_lambdas: bool = False
    ):
        super().__init__()
        if lambda_obs < 0 or lambda_prior < 0:
            raise ValueError(f"cost weights must be non-negative, got {lambda_obs}, {lambda_prior}")
        self.prior = prior
        self.a_obs = nn.Parameter(
            torch.tensor(float(lambda_obs) ** 0.5), requires_grad=learn_lambdas
        )
        self.a_prior = nn.Parameter(
            torch.tensor(float(lambda_prior) ** 0.5), requires_grad=learn_lambdas
        )

    @property
    def lambdas(self) -> tuple[float, float]:
        return float(self.a_obs.detach() ** 2), float(self.a_prior.detach() ** 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.a_obs**2 * observation_term(x, y, mask) + self.a_prior**2 * prior_term(
            x, self.prior
        )
