"""The variational cost U_Phi of the paper, Eq. (4): one implementation used everywhere.

    U_Phi(x, y, Omega) = l1 * ||x - y||^2_Omega + l2 * ||x - Phi(x)||^2

Each norm is a mean: the observation term averages over the observed entries of a sequence, the
prior term over all its entries. The paper writes sums; means make ``l1`` and ``l2`` comparable
across systems and window lengths (they are the authors' convention too). The cost is returned
per sequence, shape ``(batch,)``, so the gradient of ``U.sum()`` for one sequence does not depend
on the batch it sits in.
"""

from __future__ import annotations

import math

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
    """U_Phi with prior ``Phi`` and weights ``l1``, ``l2`` in one of two parametrisations.

    ``sqrt`` (the default): ``l1 = a_obs**2``, ``l2 = a_prior**2``, so that the weights stay
    non-negative when they are learned (supervised training). ``log_ratio``: ``l1 = c e^(r/2)``,
    ``l2 = c e^(-r/2)`` with ``r = log(l1 / l2)`` the one learned parameter and ``c`` fixed at
    the initial ``sqrt(l1 l2)``: the solvers that see the normalised gradient depend on the ratio
    only. ``learn_lambdas=False`` freezes the weights.
    """

    def __init__(
        self,
        prior: nn.Module,
        lambda_obs: float,
        lambda_prior: float,
        learn_lambdas: bool = False,
        param: str = "sqrt",
    ):
        super().__init__()
        if lambda_obs < 0 or lambda_prior < 0:
            raise ValueError(f"cost weights must be non-negative, got {lambda_obs}, {lambda_prior}")
        self.prior, self.param = prior, param
        if param == "sqrt":
            for name, value in (("a_obs", lambda_obs), ("a_prior", lambda_prior)):
                a = torch.tensor(float(value) ** 0.5)
                setattr(self, name, nn.Parameter(a, requires_grad=learn_lambdas))
        elif param == "log_ratio":
            if lambda_obs <= 0 or lambda_prior <= 0:
                raise ValueError(
                    f"log_ratio cost weights must be positive, got {lambda_obs}, {lambda_prior}"
                )
            ratio = torch.tensor(math.log(lambda_obs / lambda_prior))
            self.log_ratio = nn.Parameter(ratio, requires_grad=learn_lambdas)
            self.register_buffer("scale", torch.tensor(math.sqrt(lambda_obs * lambda_prior)))
        else:
            raise ValueError(f"unknown cost weight parametrisation {param!r}")

    def weight_parameters(self) -> list[nn.Parameter]:
        """The parameters that set ``l1`` and ``l2`` (learned in supervised training)."""
        return [self.a_obs, self.a_prior] if self.param == "sqrt" else [self.log_ratio]

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(l1, l2)`` as tensors (differentiable in the learned parameters)."""
        if self.param == "sqrt":
            return self.a_obs**2, self.a_prior**2
        half = self.log_ratio / 2
        return self.scale * half.exp(), self.scale * (-half).exp()

    @property
    def lambdas(self) -> tuple[float, float]:
        l1, l2 = self.weights()
        return float(l1.detach()), float(l2.detach())

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        l1, l2 = self.weights()
        return l1 * observation_term(x, y, mask) + l2 * prior_term(x, self.prior)
