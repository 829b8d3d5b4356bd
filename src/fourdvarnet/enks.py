"""Ensemble Kalman smoother (EnKS) baseline, batched over windows in torch.

A classical sequential data-assimilation baseline for the twin experiments: the true model is
known (the RK4 step of an ``ODEPrior``), the initial ensemble of every window is drawn from the
training climatology (a Gaussian fit ``N(mean0, cov0)``, or the training states themselves,
``ensemble_from_states``), and the observations of the window are assimilated one time after the
other:

* **forecast**: every member is propagated with the model's one-step map;
* **analysis** (at each time where a window has observations): an ensemble-transform Kalman
  filter (ETKF, Hunt et al. 2007) in ensemble space, with multiplicative inflation of the forecast
  anomalies. The observation operator picks the observed entries of the state, and the observation
  error precision is ``R^-1 = mask / obs_var``: unobserved entries get zero weight, so windows
  with different sets of observed components (or none at all) share one batched computation;
* **smoothing**: the ensemble-space transform of each analysis is also applied to the stored
  ensembles of the past states (all of them, or only those of the last ``lag`` steps);
* **localisation** (``radius`` > 0, for a ring of components such as Lorenz-96): each component
  gets its own analysis (a local ETKF, Hunt et al. 2007), in which the precision of an
  observation is tapered by the Gaspari-Cohn function of its distance along the periodic
  component axis (half-width ``radius``, zero beyond ``2 * radius``); the component's past
  states are smoothed with its own transform.

Layout as in the rest of the package: tensors ``(batch, component, time)`` with one independent
window per batch entry. ``ensemble_smoother`` works in physical units; ``EnKSSolver`` wraps it
with the solvers' call on normalised tensors. Everything runs in float64 on the device of ``y``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

Step = Callable[[torch.Tensor], torch.Tensor]


def sqrt_psd(cov: torch.Tensor) -> torch.Tensor:
    """A square root ``L`` with ``L @ L.T == cov`` of a symmetric positive semi-definite matrix."""
    vals, vecs = torch.linalg.eigh(0.5 * (cov + cov.T))
    return vecs * vals.clamp(min=0).sqrt()


def gaspari_cohn(distance: torch.Tensor, radius: float) -> torch.Tensor:
    """The Gaspari-Cohn (1999) fifth-order taper of ``distance`` with half-width ``radius``:
    1 at 0, compactly supported (0 from ``2 * radius`` on), smooth, and a correlation function
    of Euclidean distance (positive semi-definite there); here it tapers observation precisions,
    one local analysis per component, which needs no such property."""
    r = torch.as_tensor(distance, dtype=torch.float64).abs() / float(radius)
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + r**4 / 2 - r**5 / 4
    safe = r.clamp(min=1e-12)
    outer = 4 - 5 * r + 5 / 3 * r**2 + 5 / 8 * r**3 - r**4 / 2 + r**5 / 12 - 2 / (3 * safe)
    return torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r)))


def ring_taper(n_comp: int, radius: float) -> torch.Tensor:
    """``(C, C)``: the Gaspari-Cohn taper of the distance between components ``i`` and ``j`` on
    a ring of ``n_comp`` (periodic: ``min(|i - j|, C - |i - j|)``)."""
    idx = torch.arange(n_comp)
    gap = (idx[:, None] - idx[None, :]).abs()
    return gaspari_cohn(torch.minimum(gap, n_comp - gap), radius)


def initial_ensemble(
    mean0: torch.Tensor,
    cov0: torch.Tensor,
    batch: int,
    members: int,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """``members`` draws from ``N(mean0, cov0)`` for each of ``batch`` windows: ``(B, M, C)``.

    All windows are drawn in one call, window after window, so a window's draw does not depend on
    how many windows follow it. The normals are drawn on the generator's device (the default one
    when ``generator`` is None), in float64, and moved to ``device``.
    """
    mean0 = torch.as_tensor(mean0, dtype=torch.float64)
    cov0 = torch.as_tensor(cov0, dtype=torch.float64)
    n_comp = mean0.shape[0]
    if cov0.shape != (n_comp, n_comp):
        raise ValueError(f"cov0 must have shape {(n_comp, n_comp)}, got {tuple(cov0.shape)}")
    draw_device = generator.device if generator is not None else device
    z = torch.randn(
        (batch, members, n_comp), generator=generator, dtype=torch.float64, device=draw_device
    )
    z = z.to(device if device is not None else z.device)
    root = sqrt_psd(cov0.to(z.device))
    return mean0.to(z.device) + z @ root.T


def ensemble_from_states(
    states: torch.Tensor,
    batch: int,
    members: int,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """``members`` states drawn from a bank of true states for each of ``batch`` windows:
    ``(B, M, C)`` in float64.

    ``states`` ``(S, C, T)``: e.g. the training truth, ``S`` windows of ``T`` times. Each member
    is the state of a window drawn uniformly at a time drawn uniformly (with replacement), so
    every member is one of the bank's states, not a draw of a Gaussian fit to them: for a
    multi-modal climatology (L63's two wings) the members stay on the attractor. The (window,
    time) pairs are drawn on the generator's device in one call, window after window, so, as in
    ``initial_ensemble``, a window's draw does not depend on how many windows follow it.
    """
    if states.dim() != 3:
        raise ValueError(f"states must have shape (S, C, T), got {tuple(states.shape)}")
    n_win, _, n_time = states.shape
    draw_device = generator.device if generator is not None else device
    flat = torch.randint(n_win * n_time, (batch, members), generator=generator, device=draw_device)
    flat = flat.to(states.device)
    ens = states[flat // n_time, :, flat % n_time]  # (B, M, C)
    return ens.to(device=device if device is not None else ens.device, dtype=torch.float64)


class Transform(NamedTuple):
    """An ETKF transform ``T = w 1^T + I + S Q S^T`` in factored form, for a batch of windows.

    ``w`` ``(B, M)``, ``S`` ``(B, M, C)``, ``Q`` ``(B, C, C)`` symmetric. The analysis members
    are ``mean + sum_k A[k] T[k, m]`` for the forecast anomalies ``A``. The factored form costs
    ``O(M C F)`` to apply to ``F`` features instead of ``O(M^2 F)``.
    """

    w: torch.Tensor
    S: torch.Tensor
    Q: torch.Tensor

    def apply(self, anom: torch.Tensor) -> torch.Tensor:
        """``out[m] = sum_k anom[k] T[k, m]`` for anomalies ``anom`` ``(B, M, F)``."""
        St = self.S.transpose(1, 2)
        return anom + self.w.unsqueeze(1) @ anom + self.S @ (self.Q @ (St @ anom))

    def dense(self) -> torch.Tensor:
        """The matrix ``T`` ``(B, M, M)``."""
        m = self.S.shape[1]
        eye = torch.eye(m, dtype=self.S.dtype, device=self.S.device)
        return self.w.unsqueeze(2) + eye + self.S @ self.Q @ self.S.transpose(1, 2)


def etkf_transform(
    anomalies: torch.Tensor, innovation: torch.Tensor, weight: torch.Tensor
) -> Transform:
    """The ETKF analysis in ensemble space, for a batch of windows.

    ``anomalies`` ``(B, M, C)``: forecast members minus their mean (already inflated);
    ``innovation`` ``(B, C)``: observations minus the forecast mean; ``weight`` ``(B, C)``: the
    diagonal of ``R^-1`` (zero on unobserved entries). Returns the transform ``T = w 1^T + W``
    with the mean weights ``w = G^-1 A R^-1 d`` and the symmetric square root
    ``W = sqrt(M - 1) G^(-1/2)`` of ``G = (M - 1) I + A R^-1 A^T`` (Hunt et al. 2007); the
    analysis members are ``x_a[m] = x_f_mean + sum_k A[k] T[k, m]``. A window without
    observations gets ``T = I``.

    ``G`` is not decomposed itself: with ``S = A R^(-1/2)`` ``(M, C)`` and the eigenpairs
    ``(s_i, v_i)`` of the small matrix ``S^T S`` ``(C, C)``, ``w = S (S^T S + (M - 1) I)^-1 e``
    (``e = R^(-1/2) d``, push-through identity) and ``W = I + S Q S^T`` with
    ``Q = V diag(g(s)) V^T``, ``g(s) = ((1 + s / (M - 1))^(-1/2) - 1) / s``, written in a form
    that stays finite at ``s = 0``. This costs ``O(M C^2)`` per window, not ``O(M^3)``.
    """
    m1 = anomalies.shape[1] - 1
    root = weight.sqrt()
    S = anomalies * root.unsqueeze(1)  # (B, M, C)
    vals, vecs = torch.linalg.eigh(S.transpose(1, 2) @ S)
    vals = vals.clamp(min=0)
    coef = torch.einsum("bck,bc->bk", vecs, innovation * root) / (m1 + vals)
    w = S @ torch.einsum("bck,bk->bc", vecs, coef).unsqueeze(2)  # (B, M, 1)
    q = (1 + vals / m1).sqrt()
    Q = (vecs * (-1.0 / (m1 * q * (1 + q))).unsqueeze(1)) @ vecs.transpose(1, 2)
    return Transform(w.squeeze(2), S, Q)


def apply_transform(ens: torch.Tensor, T: Transform) -> torch.Tensor:
    """Members ``mean + sum_k (ens[k] - mean) T[k, m]`` of ``ens`` ``(B, M, ...)``."""
    shape = ens.shape
    flat = ens.reshape(shape[0], shape[1], -1)
    mean = flat.mean(dim=1, keepdim=True)
    return (mean + T.apply(flat - mean)).reshape(shape)


def member_transform(T: Transform) -> torch.Tensor:
    """The matrix ``P`` ``(B, M, M)`` with ``apply_transform(ens, T)[m] == sum_k ens[k] P[k, m]``.

    ``P = 11^T / M + (I - 11^T / M) T``: the transform of the members themselves rather than of
    their anomalies, so that the transforms of successive analyses compose by matrix products.
    """
    dense = T.dense()
    return dense - dense.mean(dim=1, keepdim=True) + 1.0 / dense.shape[1]


def ensemble_smoother(
    y: torch.Tensor,
    mask: torch.Tensor,
    step: Step,
    mean0,
    cov0,
    obs_var: float,
    members: int,
    inflation: float = 1.0,
    lag: int | None = None,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
    method: str = "auto",
    radius: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EnKS of every window of ``y``: returns the smoother mean and ensemble variance.

    Physical units in and out. ``y``, ``mask`` ``(B, C, T)`` (``y`` may hold anything where
    ``mask == 0``); ``step`` maps states ``(N, C)`` one time step ahead (e.g. ``ODEPrior.step``);
    ``mean0`` ``(C,)`` and ``cov0`` ``(C, C)`` the climatology the initial ensemble of every window
    is drawn from (with ``generator``; ``init`` ``(B, M, C)`` gives the initial members instead);
    ``obs_var`` the observation error variance; ``inflation`` the factor on the forecast anomalies
    at each analysis of a window (1 = none; past states are not inflated); ``lag`` the number of
    past steps updated by each analysis (None: the whole window; 0: the filter). Both outputs
    ``(B, C, T)`` in the dtype of ``y``; the variance uses the ``M - 1`` normalisation.

    ``radius`` > 0 localises every analysis (``ring_taper``: the components form a ring, as
    Lorenz-96's): one ETKF per component, with the observation precisions tapered by their
    distance to it; 0 is the global analysis. A localised smoother updates the past states
    directly (``method`` ``"direct"``).

    ``method`` only chooses how the past states are updated, with the same result up to rounding:
    ``"direct"`` transforms the stored ensembles of the past ``lag`` steps at each analysis,
    ``"product"`` (whole-window smoother only) keeps the ``(M, M)`` member transforms of the
    analyses and applies their products in one backward pass; ``"auto"`` picks the one with the
    smaller rough cost estimate (``product`` for the usual ensembles of up to a few hundred
    members, ``direct`` for a lag or for ensembles much larger than the state).
    """
    _check_smoother_args(y, mask, members, inflation, obs_var, lag, method, radius)
    n_batch, n_comp, n_time = y.shape
    observed = mask > 0
    window_observed = observed.any(dim=1)  # (B, T)
    # one host sync: the times where some window has an observation
    analysis_times = set(torch.nonzero(window_observed.any(dim=0)).flatten().tolist())
    horizon = n_time if lag is None else min(lag, n_time)
    if method == "auto":  # a localised smoother has no product form
        method = (
            "direct"
            if radius
            else _cheaper_method(lag, len(analysis_times), members, n_comp, n_time, horizon)
        )
    ens = _first_members(init, mean0, cov0, n_batch, members, n_comp, generator, y.device)
    obs = _observation_terms(y, observed, window_observed, obs_var, inflation)
    taper = ring_taper(n_comp, radius).to(y.device) if radius else None
    with torch.no_grad():
        traj, transforms = _filter(ens, step, obs, analysis_times, method, horizon, taper)
        if method == "product":
            _smooth_by_products(traj, transforms)
    mean = traj.mean(dim=1)
    var = traj.var(dim=1, unbiased=True)
    return mean.to(y.dtype), var.to(y.dtype)


def _check_smoother_args(y, mask, members, inflation, obs_var, lag, method, radius) -> None:
    """Raise ``ValueError`` on arguments ``ensemble_smoother`` cannot work with."""
    if members < 2:
        raise ValueError(f"the ensemble needs at least 2 members, got {members}")
    if not inflation > 0:
        raise ValueError(f"inflation must be positive, got {inflation}")
    if not obs_var > 0:
        raise ValueError(f"obs_var must be positive, got {obs_var}")
    if lag is not None and lag < 0:
        raise ValueError(f"lag must be None or >= 0, got {lag}")
    if y.shape != mask.shape or y.dim() != 3:
        raise ValueError(f"y and mask must share a (B, C, T) shape, got {y.shape}, {mask.shape}")
    if method not in ("auto", "direct", "product"):
        raise ValueError(f"unknown method {method!r}; expected auto, direct or product")
    if method == "product" and lag is not None:
        raise ValueError("method='product' is the whole-window smoother: it needs lag=None")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0 (0: no localisation), got {radius}")
    if method == "product" and radius:
        raise ValueError("a localised smoother (radius > 0) updates the past by method='direct'")


def _cheaper_method(lag, n_analyses, members, n_comp, n_time, horizon) -> str:
    """``"product"`` or ``"direct"``, whichever has the smaller rough cost of updating the past
    states (``"direct"`` when there is a lag)."""
    c_eff = max(n_comp, 16)  # tiny matmuls run far below peak
    direct = n_analyses * members * c_eff**2 * horizon
    product = n_analyses * members**3 + members**2 * n_comp * n_time
    return "product" if lag is None and product < direct else "direct"


def _first_members(init, mean0, cov0, n_batch, members, n_comp, generator, device):
    """The initial ensemble ``(B, M, C)`` in float64: ``init``, or drawn from the climatology."""
    if init is None:
        return initial_ensemble(mean0, cov0, n_batch, members, generator, device)
    ens = init.to(device=device, dtype=torch.float64)
    if ens.shape != (n_batch, members, n_comp):
        raise ValueError(f"init must have shape {(n_batch, members, n_comp)}, got {ens.shape}")
    return ens


def _observation_terms(y, observed, window_observed, obs_var, inflation):
    """Per window, component and time, in float64: the observations (zero where unobserved),
    the mask, the diagonal of ``R^-1`` (zero where unobserved); and the inflation factor per
    window and time (1 where the window has no observation)."""
    device, f64 = y.device, torch.float64
    weight = observed.to(f64) / float(obs_var)
    yy = torch.where(observed, y.to(f64), torch.zeros((), dtype=f64, device=device))
    one = torch.ones((), dtype=f64, device=device)
    infl = torch.where(window_observed, float(inflation) * one, one)
    return yy, observed, weight, infl


def _analysis(ens, y_t, observed_t, weight_t, infl_t, taper=None):
    """The ETKF analysis of the members ``ens`` ``(B, M, C)`` at one time; the analysis members
    and the transform. With ``taper`` ``(C, C)`` (``ring_taper``) the analysis is local: the
    transform of component ``i`` sees the precisions ``weight_t * taper[i]``, and the returned
    transform is batched over ``(B * C)``, window after window, component after component."""
    mean = ens.mean(dim=1, keepdim=True)
    anom = (ens - mean) * infl_t[:, None, None]
    innov = (y_t - mean.squeeze(1)) * observed_t
    if taper is None:
        T = etkf_transform(anom, innov, weight_t)
        return mean + T.apply(anom), T
    n_batch, members, n_comp = anom.shape
    T = etkf_transform(
        anom.repeat_interleave(n_comp, dim=0),
        innov.repeat_interleave(n_comp, dim=0),
        (weight_t[:, None, :] * taper).reshape(n_batch * n_comp, n_comp),
    )
    own = T.apply(_by_component(anom.unsqueeze(-1)))  # (B * C, M, 1): component i's own
    return mean + own.reshape(n_batch, n_comp, members).transpose(1, 2), T


def _by_component(x: torch.Tensor) -> torch.Tensor:
    """``(B, M, C, F)`` -> ``(B * C, M, F)``: each component's members as a window of its own
    (the layout of a local transform)."""
    n_batch, members, n_comp, n_feat = x.shape
    return x.transpose(1, 2).reshape(n_batch * n_comp, members, n_feat)


def _filter(ens, step, obs, analysis_times, method, horizon, taper=None):
    """The forward pass: forecasts and analyses over the window, from the members ``ens``, of
    the observations ``obs`` (``_observation_terms``).

    Returns the members at every time ``(B, M, C, T)`` and, for ``method == "product"``, the
    member transforms of the analyses by time; otherwise each analysis has already updated the
    stored members of the past ``horizon`` steps (the members are the smoothed ones). With
    ``taper`` the analyses are local (``_analysis``), and each component's past is updated by
    its own transform.
    """
    yy, observed, weight, infl = obs
    n_batch, members, n_comp = ens.shape
    n_time = yy.shape[-1]
    traj = ens.new_empty((n_batch, members, n_comp, n_time))
    transforms: dict[int, torch.Tensor] = {}
    for t in range(n_time):
        if t > 0:
            ens = step(ens.reshape(-1, n_comp)).reshape(n_batch, members, n_comp)
        if t in analysis_times:
            ens, T = _analysis(ens, yy[..., t], observed[..., t], weight[..., t], infl[:, t], taper)
            if method == "product":
                transforms[t] = member_transform(T)
            elif horizon > 0 and t > 0:
                lo = max(0, t - horizon)
                past = traj[..., lo:t]
                if taper is None:
                    traj[..., lo:t] = apply_transform(past, T)
                else:  # component after component, each by its own transform
                    new = apply_transform(_by_component(past), T)
                    shape = (n_batch, n_comp, members, t - lo)
                    traj[..., lo:t] = new.reshape(shape).transpose(1, 2)
        traj[..., t] = ens
    return traj, transforms


def _smooth_by_products(traj, transforms: dict[int, torch.Tensor]) -> None:
    """Smoothed members, in place: the filtered ones at each time times all later transforms."""
    acc = None
    for t in range(traj.shape[-1] - 1, -1, -1):
        if acc is not None:
            traj[..., t] = torch.einsum("bkc,bkm->bmc", traj[..., t], acc)
        if t in transforms:
            acc = transforms[t] if acc is None else transforms[t] @ acc


class EnKSSolver(nn.Module):
    """The EnKS with the solvers' call, ``solver(cost, x0, y, mask, n_iter, callback) -> x_hat``.

    It works on normalised tensors, as the other solvers: ``y`` is decoded with ``norm_mean`` and
    ``norm_std``, smoothed with the true model ``cost.prior.step`` (physical units, an
    ``ODEPrior``), and the smoother mean is encoded back. ``mean0``, ``cov0`` (the climatology of
    the initial ensemble) and ``obs_var`` are in physical units; with ``states`` ``(S, C, T)``
    (physical units, e.g. the training truth) the initial members are drawn from those states
    instead (``ensemble_from_states``), and ``mean0``, ``cov0`` are not used; ``radius`` > 0
    localises the analyses (``ensemble_smoother``). ``x0`` and
    ``n_iter`` are not used (the EnKS is not iterative); ``callback(1, x_hat)`` is called once at
    the end. Each call draws its initial ensembles from a generator seeded with ``seed`` on the
    device of ``y``, so a call is deterministic, but a window's draw depends on its position in
    the batch. The ensemble variance of the last call is kept in ``last_var`` (normalised units).
    """

    def __init__(
        self,
        mean0,
        cov0,
        obs_var: float,
        members: int,
        inflation: float = 1.0,
        lag: int | None = None,
        seed: int = 0,
        norm_mean: float = 0.0,
        norm_std: float = 1.0,
        states=None,
        radius: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("mean0", torch.as_tensor(mean0, dtype=torch.float64).clone())
        self.register_buffer("cov0", torch.as_tensor(cov0, dtype=torch.float64).clone())
        self.obs_var, self.members, self.inflation = float(obs_var), int(members), float(inflation)
        self.lag = None if lag is None else int(lag)
        self.seed, self.radius = int(seed), float(radius)
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self.last_var: torch.Tensor | None = None
        if states is not None:
            states = torch.as_tensor(states)
            n_comp = self.mean0.shape[0]
            if states.dim() != 3 or states.shape[1] != n_comp:
                raise ValueError(f"states must have shape (S, {n_comp}, T), got {states.shape}")
        # not saved with the weights: it is the training truth, rebuilt from the data
        self.register_buffer("states", states, persistent=False)

    def forward(self, cost, x0, y, mask, n_iter, callback=None) -> torch.Tensor:
        generator = torch.Generator(device=y.device).manual_seed(self.seed)
        phys = (y * self.norm_std + self.norm_mean) * mask
        init = None
        if self.states is not None:
            init = ensemble_from_states(self.states, y.shape[0], self.members, generator, y.device)
        mean, var = ensemble_smoother(
            phys,
            mask,
            cost.prior.step,
            self.mean0,
            self.cov0,
            self.obs_var,
            self.members,
            self.inflation,
            self.lag,
            generator,
            init,
            radius=self.radius,
        )
        x_hat = (mean - self.norm_mean) / self.norm_std
        self.last_var = var / self.norm_std**2
        if callback is not None:
            callback(1, x_hat)
        return x_hat
