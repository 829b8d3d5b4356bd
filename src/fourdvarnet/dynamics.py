"""Dynamical systems of the twin experiments: Lorenz-63 and Lorenz-96.

The tendencies work on NumPy arrays and on torch tensors alike, with the state components along
``axis``. ``simulate`` integrates the truth with the classical RK4 scheme at a fixed internal step
``dt / substeps``; ``rk4_step`` and ``euler_step`` are the fixed-step schemes of the ODE priors Phi
(Eqs. 7-8).

The truth integration uses only element-wise float64 arithmetic in a fixed order (NumPy ufuncs,
no BLAS call, no reduction), so it gives the same bits on every IEEE-754 machine, whatever BLAS
kernels, thread counts or SIMD extensions it has. The paper integrates with an adaptive RK45;
SciPy's implementation combines its stages with BLAS dot products, whose last bits depend on the
kernel, and the chaotic dynamics amplify them into a different attractor sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

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
    substeps: int = 5,
    params: dict | None = None,
) -> np.ndarray:
    """Integrate the true system with RK4 and return ``n_steps`` states sampled every ``dt``.

    Each step of ``dt`` is ``substeps`` RK4 steps of ``dt / substeps``. The first ``spinup`` time
    units (rounded to whole steps of ``dt``) are integrated and dropped; the returned trajectory
    starts one step ``dt`` after the end of the spin-up. ``x0`` may hold a batch of initial
    states along its leading axes (components last). Shape ``(n_steps, *x0.shape)``.
    """
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    if not (isinstance(substeps, int) and substeps >= 1):
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
    f = tendency(system)
    p = dict(TRUE_PARAMS[system], **(params or {}))

    def rhs(state):
        return f(state, **p)

    h = dt / substeps
    state = np.array(x0, dtype=np.float64)
    for _ in range(int(round(spinup / dt)) * substeps):
        state = rk4_step(rhs, state, h)
    out = np.empty((n_steps, *state.shape))
    for i in range(n_steps):
        for _ in range(substeps):
            state = rk4_step(rhs, state, h)
        if not np.isfinite(state).all():
            raise RuntimeError(
                f"integration diverged at step {i + 1} (dt={dt}, substeps={substeps})"
            )
        out[i] = state
    return out
