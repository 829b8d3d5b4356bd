"""The importance-sampling posterior mean (Bayes floor): exact on a linear-Gaussian system, the
pruned sampler equal to the brute-force one on Lorenz-63, the solver wrapper."""

import math

import pytest
import torch

from fourdvarnet.posterior import (
    PosteriorMeanSolver,
    build_index,
    make_bank,
    observed_entries,
    posterior_mean,
)

# --- a linear system with a known invariant law: the rotation of the plane ------------------

ANGLE = 0.7  # radians per step; x_{t+1} = R x_t leaves N(0, I) invariant
WINDOW = 16
OBS_TIMES = (3, 8, 13)  # first component observed
OBS_VAR = 0.5


def rotation(t):
    """R^t, shape (..., 2, 2), for integer tensors t."""
    c, s = torch.cos(ANGLE * t), torch.sin(ANGLE * t)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotation_bank(members, steps, seed):
    """Members x_s = R^s x_0 with x_0 ~ N(0, I): every start is a draw of the invariant law."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(members, 2, 1, generator=gen, dtype=torch.float64)
    r = rotation(torch.arange(steps + WINDOW - 1, dtype=torch.float64))
    return (r[None] @ x0[:, None]).squeeze(-1)  # (M, L, 2)


def rotation_windows(n, seed):
    """Truth (n, 2, T), observations and mask, and the closed-form Gaussian posterior."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(WINDOW, dtype=torch.float64)
    r = rotation(t)  # (T, 2, 2)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = torch.einsum("tij,nj->nit", r, x0)
    mask = torch.zeros_like(x)
    mask[:, 0, list(OBS_TIMES)] = 1.0
    y = (x + OBS_VAR**0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype)) * mask
    h = r[list(OBS_TIMES), 0, :]  # rows of the observation operator on x0
    cov0 = torch.linalg.inv(torch.eye(2, dtype=x.dtype) + h.T @ h / OBS_VAR)
    mean0 = (cov0 @ h.T @ y[:, 0, list(OBS_TIMES)].T / OBS_VAR).T  # (n, 2)
    mean = torch.einsum("tij,nj->nit", r, mean0)
    var = torch.einsum("tij,jk,tik->it", r, cov0, r)  # diag(R^t cov0 R^t^T), (2, T)
    return x, y, mask, mean, var.expand_as(mean)


def test_rotation_posterior_converges_to_the_gaussian_posterior():
    _, y, mask, exact_mean, exact_var = rotation_windows(6, seed=1)
    out, errors = {}, {}
    for name, members, steps in (("small", 10, 40), ("big", 400, 1000)):
        out[name] = posterior_mean(y, mask, rotation_bank(members, steps, seed=2), OBS_VAR)
        errors[name] = (out[name]["mean"] - exact_mean).pow(2).mean().sqrt().item()
        assert out[name]["ess"].min() > 1.0
        assert (out[name]["trunc_bound"] < 1e-6).all()
    assert errors["big"] < 0.5 * errors["small"], errors
    assert errors["big"] < 0.03, errors
    # the posterior variance, too, is the closed form's (0.2 to 1 here)
    assert (out["big"]["var"] - exact_var).abs().max() < 0.05


def test_rotation_monte_carlo_error_estimate_is_calibrated():
    # over independent small banks, the actual squared error of the posterior mean averages
    # to the two-halves estimate (mean_a - mean_b)^2 / 4
    _, y, mask, exact_mean, _ = rotation_windows(6, seed=1)
    err, est = 0.0, 0.0
    for seed in range(16):
        out = posterior_mean(y, mask, rotation_bank(20, 100, seed=100 + seed), OBS_VAR)
        err += (out["mean"] - exact_mean).pow(2).mean().item()
        est += out["mc_mse"].mean().item()
    assert 1 / 3 < err / est < 3, (err, est)


def test_rotation_pruned_equals_brute_force():
    _, y, mask, _, _ = rotation_windows(3, seed=3)
    bank = rotation_bank(50, 200, seed=4)
    pruned = posterior_mean(y, mask, bank, OBS_VAR)
    brute = posterior_mean(y, mask, bank, OBS_VAR, brute_force=True)
    for k in ("mean", "var", "mean_half_a", "mean_half_b", "ess", "max_loglik"):
        torch.testing.assert_close(pruned[k], brute[k], rtol=1e-6, atol=1e-7, msg=k)


# --- Lorenz-63 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l63():
    """A small L63 bank, and windows cut from an independent trajectory, observed like the
    paper (x1 every 8 steps, none in the first and last 10), one also seeing x3 at t = 100."""
    bank = make_bank("l63", 0.01, members=8, steps=800, window=200, spinup=3.0, seed=1)
    traj = make_bank("l63", 0.01, members=1, steps=600, window=200, spinup=3.0, seed=7)[0]
    gen = torch.Generator().manual_seed(0)
    start = torch.randint(0, 600, (4,), generator=gen)
    x = torch.stack([traj[s : s + 200] for s in start]).transpose(1, 2).contiguous()
    t = torch.arange(200)
    mask = torch.zeros_like(x)
    mask[:, 0, (t % 8 == 0) & (t >= 10) & (t < 190)] = 1.0
    mask[2, 2, 100] = 1.0
    y = (x + 2.0**0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype)) * mask
    return bank, x, y, mask


def test_make_bank_is_seeded_and_on_the_attractor():
    a = make_bank("l63", 0.01, members=3, steps=20, window=5, spinup=2.0, seed=3)
    b = make_bank("l63", 0.01, members=3, steps=20, window=5, spinup=2.0, seed=3)
    c = make_bank("l63", 0.01, members=3, steps=20, window=5, spinup=2.0, seed=4)
    assert a.shape == (3, 24, 3) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a[..., 2].min() > 0 and a.abs().max() < 60  # the butterfly, after the spin-up
    # members are distinct trajectories, each a true-model (RK4) path
    assert (a[0] - a[1]).abs().max() > 1
    f32 = make_bank("l63", 0.01, members=3, steps=20, window=5, spinup=2.0, seed=3,
                    dtype=torch.float32)  # fmt: skip
    torch.testing.assert_close(f32, a.float())


def test_l63_pruned_equals_brute_force(l63):
    bank, x, y, mask = l63
    pruned = posterior_mean(y, mask, bank, 2.0, batch_size=3)
    brute = posterior_mean(y, mask, bank, 2.0, brute_force=True)
    for k in ("mean", "var", "mean_half_a", "mean_half_b", "mc_mse", "ess", "max_loglik"):
        torch.testing.assert_close(pruned[k], brute[k], rtol=1e-6, atol=1e-8, msg=k)
    assert (pruned["trunc_bound"] < 1e-6).all()
    # most candidates were pruned, and even this small bank is far better than climatology
    assert (pruned["n_kept"] < 0.5 * brute["n_kept"]).all()
    assert (pruned["mean"] - x).pow(2).mean() < 0.1 * x.var(dim=(0, 2)).mean()


def test_l63_float32_bank_and_reused_index(l63):
    bank, x, y, mask = l63
    bank32 = bank.float()
    index = build_index(bank32, 200, *observed_entries(mask), occupancy=50)
    a = posterior_mean(y, mask, bank32, 2.0, index=index, workers=2, batch_size=1)
    b = posterior_mean(y, mask, bank, 2.0)
    torch.testing.assert_close(a["mean"], b["mean"], rtol=0, atol=1e-4)
    torch.testing.assert_close(a["var"], b["var"], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="other observed entries"):
        other = mask.clone()
        other[:, 1, 50] = 1.0
        posterior_mean(y, other, bank32, 2.0, index=index)


def test_unobserved_window_gets_the_prior_moments(l63):
    bank, _, y, mask = l63
    mask = mask.clone()
    mask[1] = 0.0
    out = posterior_mean(y, mask, bank, 2.0)
    seg = bank.unfold(1, 200, 1)  # (M, S, C, T)
    torch.testing.assert_close(out["mean"][1], seg.mean(dim=(0, 1)))
    torch.testing.assert_close(out["var"][1], seg.var(dim=(0, 1), correction=0))
    assert out["ess"][1].item() == pytest.approx(seg.shape[0] * seg.shape[1])


def test_solver_decodes_encodes_and_reports(l63):
    bank, x, y, mask = l63
    mean, std = 1.5, 8.0
    solver = PosteriorMeanSolver(bank, obs_var=2.0, norm_mean=mean, norm_std=std)
    y_n = ((y - mean) / std * mask).float()
    calls = []
    x0 = torch.zeros_like(y_n)
    x_hat = solver(None, x0, y_n, mask.float(), 20, callback=lambda k, v: calls.append(k))
    assert calls == [1] and x_hat.dtype == torch.float32 and x_hat.shape == y.shape
    ref = posterior_mean(y, mask, bank, 2.0)
    torch.testing.assert_close(x_hat.double() * std + mean, ref["mean"], rtol=0, atol=1e-4)
    torch.testing.assert_close(solver.last["var"], ref["var"], rtol=1e-4, atol=1e-6)
    summary = solver.summary()
    assert summary["expected_rscore"] == pytest.approx(ref["var"].mean().item(), rel=1e-4)
    assert summary["ess_min"] <= summary["ess_median"]
    assert math.isfinite(summary["mc_mse"])
    # a second call reuses the cached index
    solver(None, torch.zeros_like(y_n), y_n, mask.float(), 1)
    assert len(solver._indexes) == 1
