"""The ensemble Kalman smoother baseline: exactness on a linear-Gaussian model, batching, L63."""

import numpy as np
import pytest
import torch

from fourdvarnet.cost import VariationalCost
from fourdvarnet.data import interpolate
from fourdvarnet.dynamics import lorenz63, rk4_step
from fourdvarnet.enks import (
    EnKSSolver,
    ensemble_from_states,
    ensemble_smoother,
    gaspari_cohn,
    initial_ensemble,
    ring_taper,
)
from fourdvarnet.priors import true_prior

# --- A deterministic linear model with a Gaussian initial state: the exact smoother is known ----

ANGLE = 0.3
M0 = np.array([1.0, -0.5])
P0 = np.array([[1.0, 0.3], [0.3, 0.5]])
OBS_VAR = 1.0


def exact_smoother(powers, m0, p0, mask, y):
    """The exact smoother mean and variance ``(B, C, T)`` of ``x_t = A^t x0``, ``x0 ~ N(m0, p0)``
    (``powers`` ``(T, C, C)``: the ``A^t``), from the observations ``y`` where ``mask`` is 1: the
    Gaussian posterior of ``x0`` propagated by ``A^t``."""
    mean, var = np.zeros(y.shape), np.zeros(y.shape)
    for b in range(y.shape[0]):
        comp, times = np.nonzero(mask[b])
        H = powers[times, comp]  # rows e_c^T A^t of the observations
        cov = np.linalg.inv(np.linalg.inv(p0) + H.T @ H / OBS_VAR)
        m = cov @ (np.linalg.solve(p0, m0) + H.T @ y[b, comp, times] / OBS_VAR)
        mean[b] = (powers @ m).T
        var[b] = np.einsum("tij,jk,tik->it", powers, cov, powers)
    return mean, var


def linear_problem(n_batch=8, n_time=40, seed=0):
    """Rotations ``x_{t+1} = A x_t`` from ``x0 ~ N(M0, P0)``, component 0 observed every 6 steps
    (from a different first time in each window, and never in the last window), plus the exact
    smoother mean and variance: the Gaussian posterior of ``x0`` propagated by ``A^t``."""
    A = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
    rng = np.random.default_rng(seed)
    mask = np.zeros((n_batch, 2, n_time))
    for b in range(n_batch - 1):
        mask[b, 0, 3 + b % 4 :: 6] = 1
    powers = np.stack([np.linalg.matrix_power(A, t) for t in range(n_time)])  # (T, 2, 2)
    x0 = rng.multivariate_normal(M0, P0, size=n_batch)
    x = np.einsum("tij,bj->bit", powers, x0)
    y = (x + np.sqrt(OBS_VAR) * rng.standard_normal(x.shape)) * mask
    mean, var = exact_smoother(powers, M0, P0, mask, y)
    At = torch.tensor(A)
    return {
        "y": torch.tensor(y),
        "mask": torch.tensor(mask),
        "step": lambda X: X @ At.T.to(X.device),
        "mean": mean,
        "var": var,
    }


def smooth(prob, members, seed=1, **kw):
    gen = torch.Generator().manual_seed(seed)
    return ensemble_smoother(
        prob["y"], prob["mask"], prob["step"], M0, P0, OBS_VAR, members, generator=gen, **kw
    )


def test_linear_gaussian_matches_exact_smoother():
    prob = linear_problem()
    # scale of the correction: exact posterior means against the prior mean (the last window)
    correction = np.abs(prob["mean"][:-1] - prob["mean"][-1:]).mean()
    err, var_err = {}, {}
    for members in (50, 2000):
        mean, var = smooth(prob, members)
        err[members] = np.abs(mean.numpy() - prob["mean"]).mean()
        var_err[members] = np.abs(var.numpy() - prob["var"]).mean()
    assert err[2000] < 0.02 < 0.05 * correction
    assert err[50] > 2 * err[2000]
    assert var_err[2000] < 0.01 and var_err[2000] < 0.5 * var_err[50]


def test_window_without_observations_keeps_prior_ensemble():
    prob = linear_problem()
    gen = torch.Generator().manual_seed(3)
    init = initial_ensemble(M0, P0, prob["y"].shape[0], 20, gen)
    mean, var = smooth(prob, 20, init=init)
    members = [init[-1]]  # the last window has no observation: members only propagated
    for _ in range(39):
        members.append(prob["step"](members[-1]))
    free = torch.stack(members, -1).transpose(0, 1)  # (C, M, T)
    torch.testing.assert_close(mean[-1], free.mean(dim=1))
    torch.testing.assert_close(var[-1], free.var(dim=1))


def test_smoother_variants_agree():
    """Both ways of updating the past states, and lag >= window; filter and smoother at the end."""
    prob = linear_problem()
    product = smooth(prob, 30, method="product")
    direct = smooth(prob, 30, method="direct")
    long_lag = smooth(prob, 30, lag=40)
    for other in (direct, long_lag):
        torch.testing.assert_close(other[0], product[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(other[1], product[1], rtol=0, atol=1e-10)
    filt = smooth(prob, 30, lag=0)
    torch.testing.assert_close(filt[0][..., -1], product[0][..., -1], rtol=0, atol=1e-10)
    # smoothing removes spread before the first observations (the last window has none)
    assert (filt[1][:-1, :, :3] > product[1][:-1, :, :3] + 1e-3).all()
    short = smooth(prob, 30, lag=5)
    assert not torch.allclose(short[0], product[0])


def test_deterministic_and_batch_independent():
    prob = linear_problem()
    a, b = smooth(prob, 16, seed=7), smooth(prob, 16, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(smooth(prob, 16, seed=8)[0], a[0])
    # a window's initial draw does not depend on the windows after it
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    full = initial_ensemble(M0, P0, 8, 16, gen())
    assert torch.equal(initial_ensemble(M0, P0, 1, 16, gen())[0], full[0])
    torch.testing.assert_close(full, initial_ensemble(M0, P0, 8, 16, gen()), rtol=0, atol=0)
    torch.testing.assert_close(smooth(prob, 16, init=full)[0], a[0], rtol=0, atol=0)
    # each window alone, from its slice of the batched draw, gives the batched result
    for w in range(8):
        one = ensemble_smoother(
            prob["y"][w : w + 1], prob["mask"][w : w + 1], prob["step"], M0, P0, OBS_VAR, 16,
            init=full[w : w + 1],
        )  # fmt: skip
        torch.testing.assert_close(one[0][0], a[0][w], rtol=0, atol=1e-12)
        torch.testing.assert_close(one[1][0], a[1][w], rtol=0, atol=1e-12)


def test_inflation_increases_spread():
    prob = linear_problem()
    plain, inflated = smooth(prob, 30)[1], smooth(prob, 30, inflation=1.3)[1]
    assert inflated[:-1].mean() > 1.1 * plain[:-1].mean()
    torch.testing.assert_close(inflated[-1], plain[-1])  # no observation: no inflation


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    prob = linear_problem()
    init = initial_ensemble(M0, P0, 8, 32, torch.Generator().manual_seed(0))
    cpu = smooth(prob, 32, init=init)
    gpu = ensemble_smoother(
        prob["y"].cuda(), prob["mask"].cuda(), prob["step"], M0, P0, OBS_VAR, 32, init=init.cuda()
    )
    torch.testing.assert_close(gpu[0].cpu(), cpu[0])
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])
    gen = torch.Generator(device="cuda").manual_seed(0)
    mean, _ = ensemble_smoother(
        prob["y"].cuda(), prob["mask"].cuda(), prob["step"], M0, P0, OBS_VAR, 32, generator=gen
    )
    assert mean.device.type == "cuda" and torch.isfinite(mean).all()


# --- Lorenz-63 -----------------------------------------------------------------------------------

DT = 0.01


@pytest.fixture(scope="module")
def l63_windows():
    """Eight 200-step windows of an RK4 L63 trajectory, x1 observed every 8 steps (no obs in the
    first and last 10 steps, noise variance 2), and the trajectory's climatology."""
    x = torch.tensor([8.0, 0.0, 30.0], dtype=torch.float64)
    for _ in range(500):
        x = rk4_step(lorenz63, x, DT)
    traj = []
    for _ in range(4000):
        x = rk4_step(lorenz63, x, DT)
        traj.append(x)
    traj = torch.stack(traj)  # (T, 3)
    truth = torch.stack([traj[s : s + 200].T for s in range(0, 4000, 500)])  # (8, 3, 200)
    mask = torch.zeros_like(truth)
    mask[:, 0, 10:190:8] = 1
    gen = torch.Generator().manual_seed(0)
    noise = 2.0**0.5 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)
    y = (truth + noise) * mask
    return truth, y, mask, traj.mean(dim=0), torch.cov(traj.T)


def test_l63_beats_interpolated_observations(l63_windows):
    truth, y, mask, mean0, cov0 = l63_windows
    prior = true_prior("l63", DT)
    gen = torch.Generator().manual_seed(0)
    mean, var = ensemble_smoother(y, mask, prior.step, mean0, cov0, 2.0, 30, 1.02, None, gen)
    mse = float(((mean - truth) ** 2).mean())
    first_guess = float(((interpolate(y, mask, mean0) - truth) ** 2).mean())
    assert mse < 0.15 * first_guess
    # away from the poorly constrained start, the error is small and the spread of its order
    mid = slice(50, 190)
    mse_mid = float(((mean - truth)[..., mid] ** 2).mean())
    assert mse_mid < 1.5
    assert 0.3 < float(var[..., mid].mean()) / mse_mid < 3.0


def test_enks_solver_normalised_interface(l63_windows):
    truth, y, mask, mean0, cov0 = l63_windows
    norm_mean, norm_std = 8.0, 9.0
    cost = VariationalCost(true_prior("l63", DT, norm_mean, norm_std), 1.0, 1.0)
    solver = EnKSSolver(mean0, cov0, 2.0, 20, 1.02, 40, 5, norm_mean, norm_std)
    yn = ((y - norm_mean) / norm_std * mask).float()
    calls = []
    x_hat = solver(cost, torch.zeros_like(yn), yn, mask.float(), 3, lambda k, x: calls.append(k))
    assert calls == [1] and x_hat.dtype == torch.float32 and x_hat.shape == y.shape
    gen = torch.Generator().manual_seed(5)
    mean, var = ensemble_smoother(
        yn * norm_std + norm_mean, mask, cost.prior.step, mean0, cov0, 2.0, 20, 1.02, 40, gen
    )
    torch.testing.assert_close(x_hat, ((mean - norm_mean) / norm_std).float())
    torch.testing.assert_close(solver.last_var, (var / norm_std**2).float())
    torch.testing.assert_close(solver(cost, None, yn, mask.float(), 1), x_hat, rtol=0, atol=0)


# --- initial ensembles drawn from training states (enks.init: states) --------------------------


def test_states_ensemble_consists_of_training_states():
    states = torch.randn(7, 3, 11, generator=torch.Generator().manual_seed(0))
    bank = states.permute(0, 2, 1).reshape(-1, 3).double()  # every (window, time) state
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    ens = ensemble_from_states(states, 5, 40, gen(3))
    assert ens.shape == (5, 40, 3) and ens.dtype == torch.float64
    # every member is one of the bank's states, exactly
    match = (ens.reshape(-1, 1, 3) == bank.unsqueeze(0)).all(dim=2)
    assert match.any(dim=1).all()
    # the draws reach many different states (not one per window), across windows and times
    assert len({tuple(r) for r in ens.reshape(-1, 3).tolist()}) > 50
    # deterministic by the seed, another seed another draw, a window's draw independent of the
    # windows after it
    torch.testing.assert_close(ensemble_from_states(states, 5, 40, gen(3)), ens, rtol=0, atol=0)
    assert not torch.equal(ensemble_from_states(states, 5, 40, gen(4)), ens)
    torch.testing.assert_close(ensemble_from_states(states, 2, 40, gen(3)), ens[:2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="states must have shape"):
        ensemble_from_states(states[0], 5, 40, gen(3))


@pytest.fixture(scope="module")
def l63_training_states():
    """Twenty 200-step windows of another L63 trajectory than ``l63_windows``'s: a training
    truth ``(20, 3, 200)`` to draw initial members from."""
    x = torch.tensor([-5.0, -5.0, 20.0], dtype=torch.float64)
    for _ in range(500):
        x = rk4_step(lorenz63, x, DT)
    traj = []
    for _ in range(4000):
        x = rk4_step(lorenz63, x, DT)
        traj.append(x)
    return torch.stack(traj).T.reshape(3, 20, 200).permute(1, 0, 2).contiguous()


def test_l63_from_training_states_beats_interpolated_observations(l63_windows, l63_training_states):
    truth, y, mask, mean0, cov0 = l63_windows
    prior = true_prior("l63", DT)
    init = ensemble_from_states(l63_training_states, len(y), 30, torch.Generator().manual_seed(0))
    mean, var = ensemble_smoother(y, mask, prior.step, mean0, cov0, 2.0, 30, 1.02, None, init=init)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    mse = float(((mean - truth) ** 2).mean())
    first_guess = float(((interpolate(y, mask, mean0) - truth) ** 2).mean())
    assert mse < 0.15 * first_guess
    mid = slice(50, 190)
    assert float(((mean - truth)[..., mid] ** 2).mean()) < 1.5


def test_enks_solver_draws_from_states(l63_windows, l63_training_states):
    truth, y, mask, mean0, cov0 = l63_windows
    norm_mean, norm_std = 8.0, 9.0
    cost = VariationalCost(true_prior("l63", DT, norm_mean, norm_std), 1.0, 1.0)
    states = l63_training_states.float()
    solver = EnKSSolver(mean0, cov0, 2.0, 20, 1.02, 40, 5, norm_mean, norm_std, states)
    assert "states" not in solver.state_dict()  # the training truth is not saved as weights
    yn = ((y - norm_mean) / norm_std * mask).float()
    x_hat = solver(cost, None, yn, mask.float(), 1)
    gen = torch.Generator().manual_seed(5)
    init = ensemble_from_states(states, len(y), 20, gen)
    mean, _ = ensemble_smoother(
        yn * norm_std + norm_mean, mask, cost.prior.step, mean0, cov0, 2.0, 20, 1.02, 40, gen,
        init,
    )  # fmt: skip
    torch.testing.assert_close(x_hat, ((mean - norm_mean) / norm_std).float())
    # not the Gaussian draw
    gaussian = EnKSSolver(mean0, cov0, 2.0, 20, 1.02, 40, 5, norm_mean, norm_std)
    assert not torch.allclose(gaussian(cost, None, yn, mask.float(), 1), x_hat)
    with pytest.raises(ValueError, match="states must have shape"):
        EnKSSolver(mean0, cov0, 2.0, 20, states=states[:, :2])


# --- Localisation along a ring of components (Lorenz-96's layout) ------------------------------


def test_gaspari_cohn_against_hand_values():
    """1 at 0, the two polynomial pieces at 0.5 and 1.5 half-widths (computed by hand), meeting
    continuously at 1 and 2 half-widths, 0 beyond; the ring distance wraps around."""
    c = 2.0
    got = gaspari_cohn(torch.tensor([0.0, 1.0, 3.0, 4.0, 5.0]), c)
    want = torch.tensor([1.0, 0.6848958333, 0.0164930556, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    for knot in (1.0, 2.0):  # continuous at the pieces' joints
        below, above = gaspari_cohn(torch.tensor([knot - 1e-7, knot + 1e-7]) * c, c)
        assert abs(below - above) < 1e-6
    taper = ring_taper(10, 1.5)
    assert taper[0, 9] == taper[0, 1] and taper[0, 5] == 0.0 and taper[3, 3] == 1.0


def ring_problem(n_comp=12, n_batch=6, n_time=30, coupling=0.25, corr=2.0, seed=0):
    """A linear model on a ring, ``x_{t+1} = A x_t`` with ``A`` mixing each component with its
    neighbours (``coupling``), from ``x0 ~ N(0, P0)`` with ``P0`` an exponential correlation of
    length ``corr`` along the ring (0: independent components); every other component observed
    every 3 steps. Returns the problem, the initial mean and covariance and the exact smoother
    mean (``exact_smoother``)."""
    idx = np.arange(n_comp)
    gap = np.abs(idx[:, None] - idx[None, :])
    gap = np.minimum(gap, n_comp - gap)
    A = (1 - 2 * coupling) * np.eye(n_comp) + coupling * (gap == 1)
    P0 = np.exp(-gap / corr) if corr else np.eye(n_comp)
    rng = np.random.default_rng(seed)
    mask = np.zeros((n_batch, n_comp, n_time))
    mask[:, ::2, 2::3] = 1
    powers = np.stack([np.linalg.matrix_power(A, t) for t in range(n_time)])
    x0 = rng.multivariate_normal(np.zeros(n_comp), P0, size=n_batch)
    x = np.einsum("tij,bj->bit", powers, x0)
    y = (x + np.sqrt(OBS_VAR) * rng.standard_normal(x.shape)) * mask
    mean, _ = exact_smoother(powers, np.zeros(n_comp), P0, mask, y)
    At = torch.tensor(A)
    prob = {"y": torch.tensor(y), "mask": torch.tensor(mask), "step": lambda X: X @ At.T}
    return prob, np.zeros(n_comp), P0, mean


def ring_smooth(problem, members, seed=1, **kw):
    prob, m0, p0, _ = problem
    gen = torch.Generator().manual_seed(seed)
    return ensemble_smoother(
        prob["y"], prob["mask"], prob["step"], m0, p0, OBS_VAR, members, generator=gen, **kw
    )[0]


def test_localised_smoother_equals_the_global_one_as_the_radius_grows():
    problem = ring_problem()
    plain = ring_smooth(problem, 16, method="direct")
    for lag in (None, 4):
        ref = plain if lag is None else ring_smooth(problem, 16, lag=lag)
        wide = ring_smooth(problem, 16, radius=1e7, lag=lag)
        torch.testing.assert_close(wide, ref, rtol=0, atol=1e-8)
    assert not torch.allclose(ring_smooth(problem, 16, radius=2.0), plain, atol=1e-3)


def test_localised_smoother_matches_the_exact_posterior_of_independent_components():
    """Independent components (no coupling, diagonal P0): the exact posterior of a component
    uses its own observations only, which a taper narrower than one component keeps exactly;
    with many members the localised smoother converges to it."""
    problem = ring_problem(coupling=0.0, corr=0.0, n_comp=8)
    exact = problem[3]
    err = {
        m: np.abs(ring_smooth(problem, m, radius=0.4).numpy() - exact).mean() for m in (20, 2000)
    }
    assert err[2000] < 0.02 < 0.1 * np.abs(exact).mean()
    assert err[20] > 2 * err[2000]


def test_localisation_helps_a_small_ensemble():
    """Fewer members than components: the global analysis suffers from spurious long-range
    correlations; a taper a few correlation lengths wide brings it closer to the exact mean
    (averaged over ensemble seeds)."""
    problem = ring_problem(n_comp=24, corr=1.5)
    exact = problem[3]

    def err(**kw):
        return np.mean([np.abs(ring_smooth(problem, 8, seed=s, **kw).numpy() - exact).mean()
                        for s in range(4)])  # fmt: skip

    assert err(radius=6.0) < 0.7 * err()


def test_localisation_checks_its_arguments():
    problem = ring_problem()
    with pytest.raises(ValueError, match="radius"):
        ring_smooth(problem, 8, radius=-1.0)
    with pytest.raises(ValueError, match="direct"):
        ring_smooth(problem, 8, radius=2.0, method="product")
