"""Lorenz tendencies, fixed-step schemes and the adaptive truth integration."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from fourdvarnet import dynamics as D


def test_lorenz63_hand_value():
    # sigma (x2 - x1) = 10 * 1; x1 (rho - x3) - x2 = 25 - 2; x1 x2 - beta x3 = 2 - 8
    out = D.lorenz63(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out, [10.0, 23.0, -6.0], rtol=1e-14)


def test_lorenz63_custom_parameters_and_axis():
    # sigma=2, rho=5, beta=1 at (1, 2, 3): 2*(2-1), 1*(5-3)-2, 1*2-1*3
    x = np.array([[1.0, 10.0], [2.0, 0.0], [3.0, 0.0]])  # components along axis 0
    out = D.lorenz63(x, sigma=2.0, rho=5.0, beta=1.0, axis=0)
    np.testing.assert_allclose(out[:, 0], [2.0, 0.0, -1.0], rtol=1e-14)
    # second column (10, 0, 0): 2*(0-10), 10*5-0, 0
    np.testing.assert_allclose(out[:, 1], [-20.0, 50.0, 0.0], rtol=1e-14)


def test_lorenz96_hand_value():
    # dx_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + 8, indices modulo 5, x = [1, 2, 3, 4, 5]:
    # i=0: (2-4)*5 - 1 + 8 = -3     i=1: (3-5)*1 - 2 + 8 = 4      i=2: (4-1)*2 - 3 + 8 = 11
    # i=3: (5-2)*3 - 4 + 8 = 13     i=4: (1-3)*4 - 5 + 8 = -5
    out = D.lorenz96(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), forcing=8.0)
    np.testing.assert_allclose(out, [-3.0, 4.0, 11.0, 13.0, -5.0], rtol=1e-14)


def test_lorenz96_fixed_point_and_axis():
    # x_i = F for all i is an equilibrium: (F - F) F - F + F = 0
    np.testing.assert_allclose(D.lorenz96(np.full(40, 8.0)), 0.0, atol=1e-14)
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    stacked = np.stack([x, x[::-1]], axis=1)  # components along axis 0
    out = D.lorenz96(stacked, axis=0)
    np.testing.assert_allclose(out[:, 0], D.lorenz96(x))
    np.testing.assert_allclose(out[:, 1], D.lorenz96(x[::-1].copy()))


@pytest.mark.parametrize("system,n", [("l63", 3), ("l96", 40)])
def test_numpy_and_torch_agree(system, n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, n, 7)) * 5
    f = D.tendency(system)
    ref = f(x, axis=1)
    out = f(torch.as_tensor(x), axis=1)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    # rk4 and euler steps too
    for step in (D.rk4_step, D.euler_step):
        a = step(lambda s: f(s, axis=1), x, 0.01)
        b = step(lambda s: f(s, axis=1), torch.as_tensor(x), 0.01)
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-12, atol=1e-12)


def _l63_reference(x0, horizon):
    sol = solve_ivp(
        lambda _t, x: D.lorenz63(x), (0, horizon), x0, method="DOP853", rtol=1e-13, atol=1e-13
    )
    return sol.y[:, -1]


def _integrate(step, x0, horizon, h):
    n = round(horizon / h)
    x = np.array(x0, dtype=np.float64)
    for _ in range(n):
        x = step(D.lorenz63, x, h)
    return x


@pytest.mark.parametrize(
    "step,hs,lo,hi",
    [
        (D.rk4_step, [0.02, 0.01, 0.005], 3.6, 4.4),
        (D.euler_step, [0.002, 0.001, 0.0005], 0.8, 1.2),
    ],
)
def test_convergence_order(step, hs, lo, hi):
    x0, horizon = np.array([1.0, 2.0, 20.0]), 0.5
    ref = _l63_reference(x0, horizon)
    errs = [np.linalg.norm(_integrate(step, x0, horizon, h) - ref) for h in hs]
    orders = [np.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    for order in orders:
        assert lo <= order <= hi, (errs, orders)


def _step_discrepancy(system, traj, dt):
    """Relative gap between x[t+1] and a tight integration of one step from x[t]."""
    f = D.tendency(system)
    gaps = []
    for t in range(len(traj) - 1):
        sol = solve_ivp(
            lambda _t, x: f(x), (0, dt), traj[t], method="DOP853", rtol=1e-12, atol=1e-12
        )
        gaps.append(np.linalg.norm(sol.y[:, -1] - traj[t + 1]) / np.linalg.norm(traj[t + 1]))
    return np.array(gaps)


@pytest.mark.parametrize(
    "system,x0,dt,n",
    [("l63", [8.0, 0.0, 30.0], 0.01, 150), ("l96", [8.0] * 20 + [8.01] + [8.0] * 19, 0.05, 60)],
)
def test_simulate_satisfies_the_ode(system, x0, dt, n):
    gaps = {}
    for substeps in (1, 5):
        traj = D.simulate(system, x0, dt, n, spinup=2.0, substeps=substeps)
        assert traj.shape == (n, len(x0))
        assert np.isfinite(traj).all()
        gaps[substeps] = _step_discrepancy(system, traj, dt)
        assert gaps[substeps].max() < 1e-3 / substeps**4, (substeps, gaps[substeps].max())
    # RK4: the error of one step of dt made of s sub-steps shrinks like s^-4
    assert gaps[5].mean() < 5**-4 * 3 * gaps[1].mean()


@pytest.mark.parametrize(
    "system,x0,dt",
    [("l63", [8.0, 0.0, 30.0], 0.01), ("l96", [8.0] * 20 + [8.01] + [8.0] * 19, 0.05)],
)
def test_one_rk4_step_of_the_prior_lands_on_the_next_truth_state(system, x0, dt):
    """The oracle check: the true RK4 prior is consistent with the truth to < 1e-4 (MSE)."""
    traj = D.simulate(system, x0, dt, 400, spinup=5.0)
    nxt = D.rk4_step(D.tendency(system), traj[:-1], dt)
    assert np.mean((nxt - traj[1:]) ** 2) < 1e-4


def test_simulate_batched_equals_one_by_one():
    x0 = np.array([[8.0, 0.0, 30.0], [1.0, 2.0, 20.0]])
    both = D.simulate("l63", x0, 0.01, 50, spinup=0.5)
    assert both.shape == (50, 2, 3)
    for b in range(2):
        np.testing.assert_array_equal(both[:, b], D.simulate("l63", x0[b], 0.01, 50, spinup=0.5))


def test_simulate_starts_one_step_after_spinup():
    x0, dt, spinup = np.array([8.0, 0.0, 30.0]), 0.01, 0.3
    traj = D.simulate("l63", x0, dt, 5, spinup=spinup, substeps=20)
    ref = solve_ivp(
        lambda _t, x: D.lorenz63(x),
        (0, spinup + 6 * dt),
        x0,
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=[spinup + dt * k for k in range(1, 6)],
    )
    np.testing.assert_allclose(traj, ref.y.T, rtol=1e-6, atol=1e-6)
    # the state x0 itself is not part of the output when there is no spin-up either
    traj0 = D.simulate("l63", x0, dt, 3, spinup=0.0)
    assert not np.allclose(traj0[0], x0)


def test_simulate_uses_given_parameters():
    x0 = [8.0, 0.0, 30.0]
    a = D.simulate("l63", x0, 0.01, 10)
    b = D.simulate("l63", x0, 0.01, 10, params={"rho": 20.0})
    assert not np.allclose(a, b)


@pytest.mark.parametrize("dt", [0.0, -0.01])
def test_simulate_rejects_non_positive_dt(dt):
    with pytest.raises(ValueError, match="dt"):
        D.simulate("l63", [8.0, 0.0, 30.0], dt, 10)


def test_simulate_rejects_no_steps():
    with pytest.raises(ValueError, match="n_steps"):
        D.simulate("l63", [8.0, 0.0, 30.0], 0.01, 0)
    with pytest.raises(ValueError, match="substeps"):
        D.simulate("l63", [8.0, 0.0, 30.0], 0.01, 10, substeps=0)


def test_unknown_system_raises():
    with pytest.raises(ValueError, match="l42"):
        D.tendency("l42")
    with pytest.raises(ValueError, match="l42"):
        D.simulate("l42", [1.0, 2.0, 3.0], 0.01, 10)
