"""Dynamical systems of the twin experiments: Lorenz-63 and Lorenz-96.

The tendencies work on NumPy arrays and on torch tensors alike, with the state components along
``axis``. ``simulate`` integrates the truth with SciPy's adaptive RK45 (``solve_ivp``), as in the
paper; ``rk4_step`` and ``euler_step`` are the fixed-step schemes of the ODE priors Phi (Eqs. 7-8).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

SYSTEMS = ("l63", "l96")

#: True parameters of each system (paper Section 4).
TRUE_PARAMS = {
    "l63": {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0},
    "l96": {"forcing": 8.0},
}


def _unstack(x, axis: int):
    if isinstance(x, torch.Tensor):
        return x.unbind(axis)
    return tuple(np.moveaxis(x, axis, 0))


def _stack(parts, axis: int):
    if isinstance(parts[0], torch.Tensor):
        return torch.stack(parts, dim=axis)
    return np.stack(parts, axis=axis)


def _roll(x, shift: int, axis: int):
    if isinstance(x, torch.Tensor):
        return torch.roll(x, shifts=shift, dims=axis)
    return np.roll(x, shift, axis=axis)


def lorenz63(x, sigma=10.0, rho=28.0, beta=8.0 / 3.0, axis: int = -1):
    """Lorenz-63 tendency dx/dt; the 3 components lie along ``axis``."""
    x1, x2, x3 = _unstack(x, axis)
    return _stack([sigma * (x2 - x1), x1 * (rho - x3) - x2, x1 * x2 - beta * x3], axis)


def lorenz96(x, forcing=8.0, axis: int = -1):
    """Lorenz-96 tendency dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, periodic in i."""
    # np.roll(x, s)[i] == x[i - s]
    return (_roll(x, -1, axis) - _roll(x, 2, axis)) * _roll(x, 1, axis) - x + forcing


def tendency(system: str) -> Callable:
    """The tendency function of ``system`` ('l63' or 'l96')."""
    if system == "l63":
        return lorenz63
    if system == "l96":
        return lorenz96
    raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")


def euler_step(f: Callable, x, dt: float):
    """One explicit Euler step (paper Eq. 7)."""
    return x + dt * f(x)


def rk4_step(f: Callable, x, dt: float):
    """One classical fourth-order Runge-Kutta step (paper Eq. 8)."""
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def simulate(
    system: str,
    x0,
    dt: float,
    n_steps: int,
    spinup: float = 0.0,
    rtol: float = 1e-3,
    atol: float = 1e-6,
    params: dict | None = None,
) -> np.ndarray:
    """Integrate the true system with RK45 and return ``n_steps`` states sampled every ``dt``.

    The first ``spinup`` time units are integrated and dropped; the returned trajectory starts
    one step ``dt`` after the end of the spin-up. Shape ``(n_steps, n_components)``.
    """
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    f = tendency(system)
    p = dict(TRUE_PARAMS[system], **(params or {}))

    def rhs(_t, state):
        return f(state, **p)

    state = np.asarray(x0, dtype=np.float64)
    if spinup > 0:
        sol = solve_ivp(rhs, (0.0, spinup), state, method="RK45", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"spin-up integration failed: {sol.message}")
        state = sol.y[:, -1]
    t_eval = dt * np.arange(1, n_steps + 1)
    sol = solve_ivp(
        rhs,
        (0.0, t_eval[-1]),
        state,
        method="RK45",
        t_eval=t_eval,
        rtol=rtol,
        atol=atol,
        first_step=dt,
    )
    if not sol.success:
        raise RuntimeError(f"integration failed: {sol.message}")
    return sol.y.T.copy()
