"""The prior of a window, represented by a *bank* of true trajectories.

The prior is represented by a *bank*: ``M`` independent long trajectories of the true model
(``make_bank``), ``bank[m]`` of length ``S + window - 1``. Every segment
``bank[m, s:s + window]`` (``s < S``) is one sample of the prior of a window (a start drawn from
the invariant measure). The paper's bank (2,000 x 5,000) takes about 15 s on 2 shared CPU
cores.
"""

from __future__ import annotations

import torch

from .. import dynamics

#: Random initial states of the bank's members, before the spin-up: per system,
#: ``(mean, std)`` of an isotropic Gaussian (its spread only has to reach the attractor's basin).
INITIAL_STATE = {"l63": ((0.0, 0.0, 25.0), 10.0), "l96": (None, 1.0)}


def make_bank(
    system: str = "l63",
    dt: float = 0.01,
    members: int = 2000,
    steps: int = 5000,
    window: int = 200,
    spinup: float = 10.0,
    seed: int = 0,
    substeps: int = 5,
    device=None,
    dtype: torch.dtype = torch.float64,
    params: dict | None = None,
) -> torch.Tensor:
    """``members`` independent trajectories of the true model, shape ``(members, L, C)``.

    ``L = steps + window - 1``: every one of the ``steps`` start indices ``s`` of a member begins
    a full segment ``bank[m, s:s + window]``. The members start from random states (seeded
    ``torch.Generator``, see ``INITIAL_STATE``), are spun up for ``spinup`` model time units,
    then sampled every ``dt``; the integration is the classical RK4 of ``dynamics.rk4_step`` with
    ``substeps`` sub-steps of ``dt / substeps`` per step, in float64, batched over members. The
    result is stored in ``dtype`` (float32 halves the memory: 2,000 x 5,199 x 3 values are
    125 MB, against 250 MB in float64).

    The same arguments give the same bank on one device; CPU and CUDA banks differ in the last
    bits after a few hundred steps (chaos), but are samples of the same law.
    """
    _check_bank_args(members, steps, window, dt, substeps, spinup)
    f = dynamics.tendency(system)  # first: an unknown system is a ValueError
    p = dict(dynamics.TRUE_PARAMS[system], **(params or {}))
    step = _stepper(f, p, dt, substeps)
    x = _initial_states(system, p, members, seed).to(device)
    for _ in range(round(spinup / dt)):
        x = step(x)
    length = steps + window - 1
    out = torch.empty(members, length, x.shape[1], dtype=dtype, device=x.device)
    for i in range(length):
        out[:, i] = x
        x = step(x)
    if not torch.isfinite(out).all():
        raise RuntimeError("the bank holds non-finite states: reduce dt or add substeps")
    return out


def _check_bank_args(members, steps, window, dt, substeps, spinup) -> None:
    """Raise ``ValueError`` on sizes below 1, a non-positive ``dt`` or a negative spin-up."""
    if members < 1 or steps < 1 or window < 1:
        raise ValueError(
            f"members, steps and window must be >= 1, got {members}, {steps}, {window}"
        )
    if dt <= 0 or substeps < 1 or spinup < 0:
        raise ValueError(f"need dt > 0, substeps >= 1, spinup >= 0; got {dt}, {substeps}, {spinup}")


def _stepper(f, params: dict, dt: float, substeps: int):
    """The map of states ``(N, C)`` one ``dt`` ahead: ``substeps`` RK4 steps of the tendency
    ``f`` with parameters ``params``."""

    def tend(x):
        return f(x, **params, axis=-1)

    h = dt / substeps

    def step(x):
        for _ in range(substeps):
            x = dynamics.rk4_step(tend, x, h)
        return x

    return step


def _initial_states(system: str, params: dict, members: int, seed: int) -> torch.Tensor:
    """The members' random first states, float64 on the CPU, before the spin-up."""
    n_comp = 3 if system == "l63" else 40
    gen = torch.Generator().manual_seed(int(seed))
    centre, std = INITIAL_STATE[system]
    x = std * torch.randn(members, n_comp, generator=gen, dtype=torch.float64)
    return x + (
        torch.tensor(centre, dtype=torch.float64) if centre is not None else params["forcing"]
    )
