"""The variational cost U_Phi (Eq. 4): hand example, gradients, argument checks."""

import pytest
import torch
from torch import nn

from fourdvarnet.config import GennConfig
from fourdvarnet.cost import VariationalCost, observation_term, prior_term
from fourdvarnet.priors import GENN, ODEPrior


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


def _hand_example():
    x = torch.tensor(
        [
            [[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]],
            [[2.0, 0.0, 0.0], [0.0, 0.0, -2.0]],
        ]
    )
    y = torch.tensor(
        [
            [[0.0, 7.0, 1.0], [5.0, 0.0, 0.0]],
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    mask = torch.tensor(
        [
            [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # sequence 1 has no observation
        ]
    )
    return x, y, mask


def test_cost_hand_example():
    x, y, mask = _hand_example()
    cost = VariationalCost(Zero(), 0.5, 3.0)
    # sequence 0: observed misfits (1-0)^2 = 1 and (3-1)^2 = 4 -> mean 2.5 (y=7, 5 unobserved);
    #             prior term with Phi = 0: mean of x^2 = (1+4+9+0+1+1)/6 = 8/3;
    #             U = 0.5 * 2.5 + 3 * 8/3 = 9.25
    # sequence 1: no observation -> observation term 0; prior (4+4)/6 = 4/3; U = 3 * 4/3 = 4
    u = cost(x, y, mask)
    assert u.shape == (2,)
    torch.testing.assert_close(u, torch.tensor([9.25, 4.0]))
    torch.testing.assert_close(observation_term(x, y, mask), torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(prior_term(x, Zero()), torch.tensor([8.0 / 3.0, 4.0 / 3.0]))
    assert cost.lambdas == pytest.approx((0.5, 3.0))
    # a perfect prior leaves only the observation term
    torch.testing.assert_close(
        VariationalCost(Identity(), 0.5, 3.0)(x, y, mask), torch.tensor([1.25, 0.0])
    )


def test_cost_per_sequence_is_batch_independent():
    x, y, mask = _hand_example()
    cost = VariationalCost(ODEPrior("l63", 0.01, mean=1.0, std=2.0), 0.1, 1.0)
    x = x.repeat(1, 1, 4)[:, :, :10]
    x = torch.cat([x, torch.zeros(2, 1, 10)], dim=1)  # 3 components
    y = torch.zeros_like(x)
    mask = torch.zeros_like(x)
    mask[:, 0, ::3] = 1
    full = cost(x, y, mask)
    torch.testing.assert_close(full[1:], cost(x[1:], y[1:], mask[1:]))


def test_lambdas_learnable_and_non_negative():
    x, y, mask = _hand_example()
    frozen = VariationalCost(Zero(), 0.5, 3.0)
    assert not frozen.a_obs.requires_grad and not frozen.a_prior.requires_grad
    cost = VariationalCost(Zero(), 0.5, 3.0, learn_lambdas=True)
    cost(x, y, mask).sum().backward()
    # dU/da = 2a * term: a_obs = sqrt(0.5), obs terms sum 2.5; a_prior = sqrt(3), prior sum 4
    assert cost.a_obs.grad.item() == pytest.approx(2 * 0.5**0.5 * 2.5, rel=1e-6)
    assert cost.a_prior.grad.item() == pytest.approx(2 * 3**0.5 * 4.0, rel=1e-6)
    with torch.no_grad():
        cost.a_obs.fill_(-2.0)
    assert cost.lambdas[0] == pytest.approx(4.0)  # weights are squares: never negative


@pytest.mark.parametrize("bad", [(-0.1, 1.0), (1.0, -1e-3)])
def test_negative_lambdas_raise(bad):
    with pytest.raises(ValueError, match="non-negative"):
        VariationalCost(Zero(), *bad)


def _gradcheck(prior, n_comp, t, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_comp, t, dtype=torch.float64, generator=gen).requires_grad_(True)
    y = torch.randn(2, n_comp, t, dtype=torch.float64, generator=gen)
    mask = (torch.rand(2, n_comp, t, generator=gen) < 0.3).to(torch.float64)
    cost = VariationalCost(prior, 0.3, 1.7).double()
    assert torch.autograd.gradcheck(lambda z: cost(z, y, mask), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("system,n_comp,dt", [("l63", 3, 0.01), ("l96", 12, 0.05)])
@pytest.mark.parametrize("scheme", ["rk4", "euler"])
def test_gradcheck_ode_prior(system, n_comp, dt, scheme):
    _gradcheck(ODEPrior(system, dt, scheme, mean=0.5, std=3.0), n_comp, 8)


def test_gradcheck_genn_prior():
    torch.manual_seed(0)
    _gradcheck(GENN(1, 3, GennConfig(width=6, hidden=4, kernel=5, pool=4)), 3, 8)
    _gradcheck(GENN(2, 1, GennConfig(width=4, hidden=3, kernel=3, pool=4, head=True)), 6, 8)
