"""Priors Phi: ODE steps with true parameters, parameter counts, the GENN zero-centre rule."""

import pytest
import torch

from fourdvarnet import dynamics as D
from fourdvarnet.config import GennConfig, ModelConfig
from fourdvarnet.metrics import second_difference
from fourdvarnet.priors import GENN, ODEPrior, build_prior, true_prior

GENN_L63 = GennConfig(width=60, hidden=30, kernel=11, pool=4, head=False, upsample="block")
GENN_L96 = GennConfig(width=50, hidden=50, kernel=11, pool=4, head=True, upsample="block")


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scheme", ["rk4", "euler"])
@pytest.mark.parametrize("system,n,dt", [("l63", 3, 0.01), ("l96", 40, 0.05)])
def test_ode_prior_is_one_scheme_step(system, n, dt, scheme):
    mean, std = 2.5, 7.0
    prior = ODEPrior(system, dt, scheme, mean, std).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, n, 9, generator=gen, dtype=torch.float64)
    out = prior(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[..., 0], x[..., 0], rtol=0, atol=0)
    f = D.tendency(system)
    step = D.rk4_step if scheme == "rk4" else D.euler_step
    X = x * std + mean
    # the parameters are stored in float32 (beta = 8/3 rounded): integrate with the same values
    params = {k: v.item() for k, v in prior.named_parameters() if k in ("sigma", "rho", "beta")}
    expected = (step(lambda s: f(s, axis=1, **params), X[..., :-1], dt) - mean) / std
    torch.testing.assert_close(out[..., 1:], expected, rtol=1e-12, atol=1e-12)
    # the prediction at t uses x(t - 1) only: changing the last time step changes nothing
    x2 = x.clone()
    x2[..., -1] += 1.0
    torch.testing.assert_close(prior(x2)[..., :-1], out[..., :-1], rtol=0, atol=0)


def test_ode_prior_float32_parameters_are_true_values():
    prior = ODEPrior("l63", 0.01)
    values = {k: v.item() for k, v in prior.named_parameters()}
    assert values["sigma"] == 10.0 and values["rho"] == 28.0
    assert values["beta"] == pytest.approx(8.0 / 3.0, rel=1e-7)
    assert ODEPrior("l96", 0.05).forcing.item() == 8.0


def test_l96_stencil_tendency_is_lorenz96():
    prior = ODEPrior("l96", 0.05).double()
    X = 3.0 * torch.randn(3, 40, 7, dtype=torch.float64) + 2.0
    torch.testing.assert_close(prior.tendency(X), D.lorenz96(X, axis=1), rtol=1e-12, atol=1e-12)
    # and the stencil parameters drive it: another forcing shifts the tendency by the difference
    with torch.no_grad():
        prior.forcing.fill_(10.0)
    torch.testing.assert_close(prior.tendency(X), D.lorenz96(X, axis=1) + 2.0)


def test_true_prior_is_frozen():
    p = true_prior("l63", 0.01, 1.0, 2.0)
    assert not any(q.requires_grad for q in p.parameters())
    assert p.scheme == "rk4" and p.mean == 1.0 and p.std == 2.0


def test_parameter_counts():
    assert n_params(ODEPrior("l63", 0.01)) == 3
    assert n_params(ODEPrior("l96", 0.05)) == 9
    assert n_params(GENN(1, 3, GENN_L63)) == 15_300
    assert n_params(GENN(2, 1, GENN_L96)) == 52_150
    # build_prior passes the model config through
    assert n_params(build_prior("genn", "l96", 0.05, model=ModelConfig(genn=GENN_L96))) == 52_150
    # and the GENN has no bias anywhere
    assert not any("bias" in name for name, _ in GENN(2, 1, GENN_L96).named_parameters())


def _perturbation_check(phi, x, point):
    """Phi at ``point`` (an index into the state) ignores the input at that same point."""
    x2 = x.clone()
    x2[point] += 3.0
    with torch.no_grad():
        a, b = phi(x), phi(x2)
    assert a.shape == x.shape
    same = (a[point] - b[point]).abs().max()
    assert same <= 1e-6 * a.abs().max(), float(same)
    others = (a - b).abs()
    others[point] = 0
    assert others.max() > 1e-3, "Phi does not depend on its input elsewhere"


def _train(phi, x, steps=8, lr=0.5):
    opt = torch.optim.Adam(phi.parameters(), lr=lr)
    target = torch.randn_like(x)
    for _ in range(steps):
        loss = ((phi(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


@pytest.mark.parametrize("upsample", ["block", "linear"])
@pytest.mark.parametrize("system", ["l63", "l96"])
def test_genn_output_independent_of_same_point(system, upsample):
    torch.manual_seed(0)
    if system == "l63":
        phi = GENN(1, 3, GennConfig(width=12, hidden=6, kernel=5, pool=4, upsample=upsample))
        x = torch.randn(2, 3, 32)
        points = [(0, slice(None), t) for t in (0, 5, 13, 31)] + [(1, 1, 17)]
    else:
        cfg = GennConfig(width=8, hidden=6, kernel=5, pool=4, head=True, upsample=upsample)
        phi = GENN(2, 1, cfg)
        x = torch.randn(2, 10, 24)
        points = [(0, k, t) for k, t in ((0, 0), (3, 9), (9, 23), (5, 14))]
    for point in points:
        _perturbation_check(phi, x, point)
    # after optimisation with a large learning rate the constraint still holds
    before = [p.detach().clone() for p in phi.parameters()]
    _train(phi, x)
    assert all(not torch.equal(a, b) for a, b in zip(before, phi.parameters()))
    for point in points:
        _perturbation_check(phi, x, point)
    # even when the raw weights are set with a non-zero centre (the mask applies at forward)
    with torch.no_grad():
        for p in phi.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    for point in points:
        _perturbation_check(phi, x, point)


def test_genn_paper_sizes_keep_the_constraint():
    torch.manual_seed(1)
    phi = GENN(1, 3, GENN_L63)
    x = torch.randn(1, 3, 48)
    _perturbation_check(phi, x, (0, slice(None), 21))
    phi96 = GENN(2, 1, GENN_L96)
    x96 = torch.randn(1, 40, 16)
    _perturbation_check(phi96, x96, (0, 39, 7))


def test_genn_linear_upsampling_is_smooth():
    """On a smooth input the coarse branch's output is smooth with ``linear`` upsampling, and
    piecewise (each block repeats the transposed kernel's pattern) with ``block``."""
    torch.manual_seed(2)
    t = torch.linspace(0, 3, 64)
    x = torch.stack([torch.sin(t), torch.cos(2 * t), t / 3])[None]
    rough = {}
    for upsample in ("block", "linear"):
        phi = GENN(1, 3, GennConfig(width=8, hidden=6, kernel=5, pool=4, upsample=upsample))
        with torch.no_grad():
            c, fine = phi.branches(x)
        torch.testing.assert_close(c + fine, phi(x))
        rough[upsample] = float(second_difference(c).pow(2).mean() / c.pow(2).mean())
    assert rough["block"] > 1 and rough["linear"] < 1e-2, rough


def test_genn_length_not_divisible_by_pool():
    phi = GENN(1, 3, GennConfig(width=4, hidden=4, kernel=3, pool=4))
    with pytest.raises(ValueError, match="divisible"):
        phi(torch.randn(1, 3, 30))


def test_build_prior_names():
    assert isinstance(build_prior("rk4", "l63", 0.01), ODEPrior)
    assert build_prior("euler", "l96", 0.05).scheme == "euler"
    assert isinstance(build_prior("genn", "l63", 0.01), GENN)
    with pytest.raises(ValueError, match="wavelet"):
        build_prior("wavelet", "l63", 0.01)
    with pytest.raises(ValueError, match="l42"):
        build_prior("genn", "l42", 0.01)
    with pytest.raises(ValueError, match="l42"):
        build_prior("rk4", "l42", 0.01)
    with pytest.raises(ValueError, match="dt"):
        ODEPrior("l63", 0.0)
    with pytest.raises(ValueError, match="rk2"):
        ODEPrior("l63", 0.01, "rk2")
