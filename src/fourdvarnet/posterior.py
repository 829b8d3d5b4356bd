"""The exact posterior mean of twin-experiment windows (the "Bayes floor") by importance sampling.

The truth of a window is a deterministic trajectory of the true model whose first state is drawn
from the attractor's invariant measure, and the observations add Gaussian noise of variance
``obs_var`` to some entries. Given a window's observations ``y`` (mask ``Omega``), the
minimum-MSE estimator of the window is the posterior mean ``E[x | y]``; its MSE, the posterior
variance averaged over entries, is the lowest R-score any method can reach.

The prior is represented by a *bank*: ``M`` independent long trajectories of the true model
(``make_bank``), ``bank[m]`` of length ``S + window - 1``. Every segment
``bank[m, s:s + window]`` (``s < S``) is one sample of the prior of a window (a start drawn from
the invariant measure), and its importance weight is the Gaussian likelihood of the window's
observations, ``w = exp(-RSS / (2 obs_var))`` with ``RSS = sum_Omega (y - x)^2``. The posterior
mean, the posterior variance per entry and the effective sample size ``(sum w)^2 / sum w^2``
follow; the members are split in two halves (``m < M / 2`` and the rest) whose separate
estimates measure the Monte Carlo error.

Pruning (``posterior_mean``, the default): a candidate whose log-weight is more than ``trunc``
below the best one's (``RSS > RSS_best + 2 obs_var trunc``) is dropped, the best of its own
half of the bank, so that both halves are as exact as the whole. The candidates are indexed
(``build_index``) by cells of a grid over the state at the first observed time, with, per
cell, the box of the candidates' values at every observed entry: the box distance to ``y``
bounds the RSS of the whole cell from below, so almost every cell is skipped without looking at
its candidates, and the RSS of the others is computed exactly (float64). The result is the
brute-force estimate restricted to ``{RSS <= RSS_best(half) + 2 obs_var trunc}``, exactly. The
weight left out, relative to the weight kept, is bounded per window by ``trunc_bound``: each
dropped candidate looked at counts ``exp(-trunc)`` (relative to the best), each skipped cell
``count * exp(-(lower bound - RSS_best) / (2 obs_var))``; it is at most
``M S exp(-trunc) / ESS`` in any case (``trunc = 20``: about 1e-7 for the paper's bank). The
weighted sums over the kept segments use their contiguity: consecutive kept starts of one
member form *pieces* of at most ``piece`` starts, whose ``piece + window - 1`` states are read
once and summed with a batched product on a strided (Hankel) view, in float64.

Cost, the paper's set-up (bank 2,000 x 5,000, x1 observed 22 times, ``trunc = 20``, 2 shared
CPU cores): bank 15 s, index 12 s, then 0.13-0.16 s a window; the index takes ``M S d`` values
of the bank's dtype (880 MB in float32) and twice the bank in float64 (500 MB). On the CPU the
windows are split over ``workers`` Python threads with one intra-op thread each: the many
small tensor operations gain nothing from OpenMP threads, which only spin-wait on them.

``brute_force=True`` weighs every segment of the bank without pruning (about 80 s a window of
the paper's set-up on those 2 cores), for checks.

``PosteriorMeanSolver`` wraps the estimator in the project's solver call, so the Bayes floor can
be scored like any other row.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

from . import dynamics

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
    if members < 1 or steps < 1 or window < 1:
        raise ValueError(
            f"members, steps and window must be >= 1, got {members}, {steps}, {window}"
        )
    if dt <= 0 or substeps < 1 or spinup < 0:
        raise ValueError(f"need dt > 0, substeps >= 1, spinup >= 0; got {dt}, {substeps}, {spinup}")
    f = dynamics.tendency(system)
    p = dict(dynamics.TRUE_PARAMS[system], **(params or {}))

    def tend(x):
        return f(x, **p, axis=-1)

    n_comp = 3 if system == "l63" else 40
    gen = torch.Generator().manual_seed(int(seed))
    centre, std = INITIAL_STATE[system]
    x = std * torch.randn(members, n_comp, generator=gen, dtype=torch.float64)
    x = x + (torch.tensor(centre, dtype=torch.float64) if centre is not None else p["forcing"])
    x = x.to(device)
    h = dt / substeps

    def step(x):
        for _ in range(substeps):
            x = dynamics.rk4_step(tend, x, h)
        return x

    for _ in range(round(spinup / dt)):
        x = step(x)
    length = steps + window - 1
    out = torch.empty(members, length, n_comp, dtype=dtype, device=x.device)
    for i in range(length):
        out[:, i] = x
        x = step(x)
    if not torch.isfinite(out).all():
        raise RuntimeError("the bank holds non-finite states: reduce dt or add substeps")
    return out


@dataclass
class BankIndex:
    """A bank's candidates sorted by grid cell of their state at the first observed time.

    ``entries_t``, ``entries_c`` are the observed ``(time, component)`` entries the index
    serves (the union over the windows it was built for), ``keys[i]`` the bank values of the
    candidate ``order[i]`` (``= m * starts + s``, the segment ``bank[m, s:s + window]``) at those
    entries, in the bank's dtype, sorted by cell; cell ``k`` holds ``order[ptr[k]:ptr[k + 1]]``,
    and ``lo[k]``, ``hi[k]`` bound its keys entry by entry. The cells are numbered along a
    Z-order curve of the grid, so that cells close in number are close in state space.
    ``moments`` is the bank centred by ``centre`` (per component) with its squares interleaved,
    ``(M, L, 2 C)``, for the weighted sums. Memory: ``keys`` take ``M S d`` values (880 MB for
    the paper's bank in float32, d = 22), ``moments`` twice the bank.
    """

    window: int
    starts: int
    entries_t: torch.Tensor
    entries_c: torch.Tensor
    cell_size: float
    order: torch.Tensor
    ptr: torch.Tensor
    counts: torch.Tensor
    keys: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    centre: torch.Tensor
    moments: torch.Tensor

    @property
    def n_cells(self) -> int:
        return self.counts.numel()

    def serves(self, entries_t: torch.Tensor, entries_c: torch.Tensor) -> bool:
        """Whether every observed entry ``(t, c)`` given is one of the index's entries."""
        have = set(zip(self.entries_t.tolist(), self.entries_c.tolist()))
        return all(e in have for e in zip(entries_t.tolist(), entries_c.tolist()))


def observed_entries(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(time, component)`` entries observed in at least one window, sorted by time.

    ``mask`` has shape ``(B, C, T)``; returns two int64 tensors ``(t, c)``.
    """
    any_obs = (mask > 0).any(dim=0)  # (C, T)
    c, t = any_obs.nonzero(as_tuple=True)
    order = torch.argsort(t * any_obs.shape[0] + c)
    return t[order], c[order]


def _grid(z: torch.Tensor, size: float) -> torch.Tensor:
    """Integer grid coordinates of the points ``z`` ``(n, D)`` in cells of side ``size``."""
    return torch.floor((z - z.min(dim=0).values) / size).long()


def _n_cells(z: torch.Tensor, size: float) -> int:
    g = _grid(z, size)
    ids = torch.zeros_like(g[:, 0])
    for j in range(g.shape[1]):
        ids = ids * (int(g[:, j].max()) + 1) + g[:, j]
    return torch.unique(ids).numel()


def _morton(g: torch.Tensor) -> torch.Tensor:
    """Z-order (Morton) codes of non-negative integer coordinates ``g`` ``(n, D)``, D <= 3."""
    code = torch.zeros_like(g[:, 0])
    dims = g.shape[1]
    for bit in range(63 // dims):
        for j in range(dims):
            code |= ((g[:, j] >> bit) & 1) << (bit * dims + j)
    return code


def _tune_cell_size(z: torch.Tensor, occupancy: int, sample: int = 1_000_000) -> float:
    """A cell side giving about ``occupancy`` candidates per non-empty cell (on a subsample)."""
    step = max(1, z.shape[0] // sample)
    sub = z[::step]
    target = max(occupancy * sub.shape[0] / z.shape[0], 1.0)
    size = float((sub.max(dim=0).values - sub.min(dim=0).values).max()) / 20 + 1e-12
    prev = None
    for _ in range(5):  # occupancy ~ size^D on a D-dimensional attractor: secant steps in log-log
        occ = sub.shape[0] / _n_cells(sub, size)
        if abs(math.log(occ / target)) < 0.2:
            break
        dim = 2.0
        if prev is not None and prev[1] != occ:
            dim = min(max(math.log(occ / prev[1]) / math.log(size / prev[0]), 0.5), 3.0)
        prev = (size, occ)
        size *= (target / occ) ** (1.0 / dim)
    return size


def build_index(
    bank: torch.Tensor,
    window: int,
    entries_t: torch.Tensor,
    entries_c: torch.Tensor,
    cell_size: float | None = None,
    occupancy: int = 500,
) -> BankIndex:
    """Index the bank's candidates for windows observed at ``(entries_t, entries_c)``.

    The cells are the boxes of a grid of side ``cell_size`` over the state at the first
    observed time (its 3 principal components when the state has more than 3); by default the
    side is tuned so that a non-empty cell holds about ``occupancy`` candidates. About 10-20 s
    for the paper's bank (10^7 candidates) on one CPU core.
    """
    n_mem, length, n_comp = bank.shape
    starts = length - window + 1
    if starts < 1:
        raise ValueError(f"bank members of length {length} are shorter than the window {window}")
    if entries_t.numel() == 0:
        raise ValueError("no observed entry: nothing to index")
    dev = bank.device
    bank = bank.contiguous()
    entries_t, entries_c = entries_t.to(dev), entries_c.to(dev)
    t_ref = int(entries_t.min())
    z = bank[:, t_ref : t_ref + starts, :].reshape(-1, n_comp).to(torch.float64)
    if n_comp > 3:
        zc = z - z.mean(dim=0)
        axes = torch.linalg.eigh(zc.T @ zc).eigenvectors[:, -3:]
        z = zc @ axes
    n = z.shape[0]
    if cell_size is None:
        cell_size = _tune_cell_size(z, occupancy)
    g = _grid(z, float(cell_size))
    del z
    ids = torch.zeros_like(g[:, 0])
    for j in range(g.shape[1]):
        ids = ids * (int(g[:, j].max()) + 1) + g[:, j]
    ids, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    # number the cells along a Z-order curve: grid coordinates of one member of each cell
    rep = torch.empty_like(ids).scatter_(0, inverse, torch.arange(n, device=dev))
    rank = torch.argsort(torch.argsort(_morton(g[rep])))
    del g, ids, rep
    inverse, counts = rank[inverse], counts[torch.argsort(rank)]
    order = torch.argsort(inverse, stable=True)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=dev)
    ptr[1:] = counts.cumsum(0)
    d = entries_t.numel()
    keys = torch.empty(n, d, dtype=bank.dtype, device=dev)
    entries = list(zip(entries_t.tolist(), entries_c.tolist()))
    for j0 in range(0, d, 8):  # a few entries at a time: rows gathered, less memory
        cols = [bank[:, t : t + starts, c] for t, c in entries[j0 : j0 + 8]]
        keys[:, j0 : j0 + 8] = torch.stack(cols, dim=2).reshape(n, -1).index_select(0, order)
    cell = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts)
    lo = torch.full((counts.numel(), d), math.inf, dtype=bank.dtype, device=dev)
    hi = torch.full_like(lo, -math.inf)
    lo.scatter_reduce_(0, cell[:, None].expand(n, d), keys, "amin")
    hi.scatter_reduce_(0, cell[:, None].expand(n, d), keys, "amax")
    centre = bank[:, :: max(1, length // 64)].to(torch.float64).mean(dim=(0, 1))
    moments = torch.empty(n_mem, length, 2 * n_comp, dtype=torch.float64, device=dev)
    for m0 in range(0, n_mem, 64):
        xc = bank[m0 : m0 + 64].to(torch.float64) - centre
        moments[m0 : m0 + 64] = torch.cat([xc, xc * xc], dim=2)
    return BankIndex(
        window,
        starts,
        entries_t,
        entries_c,
        float(cell_size),
        order,
        ptr,
        counts,
        keys,
        lo,
        hi,
        centre,
        moments,
    )


# --------------------------------------------------------------------------------------------
# the posterior mean


def posterior_mean(
    y: torch.Tensor,
    mask: torch.Tensor,
    bank: torch.Tensor,
    obs_var: float,
    window: int | None = None,
    *,
    trunc: float = 20.0,
    brute_force: bool = False,
    index: BankIndex | None = None,
    batch_size: int = 64,
    piece: int = 8,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Importance-sampling posterior moments of windows given their observations.

    ``y``, ``mask``: shape ``(B, C, T)`` in physical units (component dim 1, ``y`` arbitrary
    where not observed), as ``data.load_split`` returns them; ``bank``: ``(M, L, C)`` with
    ``L >= T``, e.g. from ``make_bank`` or any other sampler of the prior (every segment
    ``bank[m, s:s + T]`` is one prior sample); ``obs_var``: the observation noise variance.

    Candidates with log-weight below the best one's minus ``trunc`` are dropped (see the module
    docstring; ``trunc_bound`` says how much weight that leaves out); ``brute_force=True`` keeps
    them all. ``index`` is a ``build_index`` of this bank for these windows' observed entries,
    built when not given (reuse it for several calls). Windows are processed ``batch_size`` at
    a time (about 20 MB of work memory a window), in an order that groups windows needing the
    same cells, over ``workers`` threads (default ``torch.get_num_threads()`` on the CPU, 1 on
    CUDA; torch runs one intra-op thread during the call); ``progress(done, total)`` is called
    after each batch. ``piece``: most starts per piece of the weighted sums.

    Returns float64 tensors on ``y``'s device: ``mean``, ``var`` ``(B, C, T)`` (posterior mean
    and variance per entry); ``mean_half_a``, ``mean_half_b`` (the same estimate from members
    ``m < M // 2`` and from the others); ``mc_mse`` ``(B,)``, the mean over entries of
    ``(mean_half_a - mean_half_b)^2 / 4``, an estimate of the squared Monte Carlo error of
    ``mean`` (each half has twice its variance); ``ess`` ``(B,)``; ``n_kept`` ``(B,)`` candidates
    weighed; ``max_loglik`` ``(B,)`` the best candidate's ``-RSS / (2 obs_var)``; and
    ``trunc_bound`` ``(B,)`` (0 for ``brute_force``).
    """
    if y.dim() != 3 or y.shape != mask.shape:
        raise ValueError(
            f"y and mask must have the same shape (B, C, T), got {y.shape}, {mask.shape}"
        )
    if bank.dim() != 3 or bank.shape[2] != y.shape[1]:
        raise ValueError(f"bank must have shape (M, L, C={y.shape[1]}), got {tuple(bank.shape)}")
    window = y.shape[2] if window is None else int(window)
    if window != y.shape[2]:
        raise ValueError(f"window={window} but y has {y.shape[2]} time steps")
    if bank.shape[1] < window:
        raise ValueError(f"bank members of length {bank.shape[1]} are shorter than the window")
    if bank.shape[0] < 2:
        raise ValueError("the bank needs at least 2 members (two halves for the Monte Carlo error)")
    if not obs_var > 0:
        raise ValueError(f"obs_var must be positive, got {obs_var}")
    out_device = y.device
    dev = bank.device
    bank = bank.contiguous()
    mask = (mask > 0).to(dev)
    y = torch.where(
        mask, y.to(dev, torch.float64), torch.zeros((), dtype=torch.float64, device=dev)
    )
    n_win = y.shape[0]
    res = _empty_result(n_win, y.shape[1], window, dev)
    observed = mask.flatten(1).any(dim=1)
    if (~observed).any():
        _fill(res, (~observed).nonzero().flatten(), _prior_moments(bank, window))
    todo = observed.nonzero().flatten()
    if brute_force:
        for i0 in range(0, todo.numel(), batch_size):
            idx = todo[i0 : i0 + batch_size]
            _fill(res, idx, _brute_force(y[idx], mask[idx], bank, obs_var, window))
            if progress is not None:
                progress(min(i0 + batch_size, todo.numel()), todo.numel())
        return {k: v.to(out_device) for k, v in res.items()}
    if todo.numel():
        et, ec = observed_entries(mask[todo])
        if index is None:
            index = build_index(bank, window, et, ec)
        elif index.window != window or not index.serves(et, ec):
            raise ValueError("index was built for other observed entries or another window")
        todo = todo[_locality_order(y[todo], mask[todo], index)]
    if workers is None:
        workers = torch.get_num_threads() if dev.type == "cpu" else 1
    workers = max(1, min(int(workers), todo.numel()))
    size = max(1, min(batch_size, -(-todo.numel() // workers)))
    batches = [todo[i : i + size] for i in range(0, todo.numel(), size)]
    done = [0]
    lock = threading.Lock()

    def run(idx):
        part = _pruned(y[idx], mask[idx], bank, index, obs_var, trunc, piece)
        with lock:
            _fill(res, idx, part)
            done[0] += idx.numel()
            if progress is not None:
                progress(done[0], todo.numel())

    # Many small tensor operations: on the CPU, one intra-op thread each (OpenMP threads only
    # spin-wait on them, badly so on a busy machine) and the batches on `workers` threads.
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    try:
        if workers == 1:
            for idx in batches:
                run(idx)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, batches))
    finally:
        torch.set_num_threads(threads)
    return {k: v.to(out_device) for k, v in res.items()}


def _observed_keys(y, mask, index: BankIndex):
    """``y`` and the mask at the index's entries ``(B, d)``, float64."""
    et, ec = index.entries_t, index.entries_c
    return y[:, ec, et], mask[:, ec, et].to(torch.float64)


def _lower_bounds(y_u, m_u, index: BankIndex):
    """Squared distance from each window's observations to the cells' boxes ``(B, n_cells)``:
    a lower bound of the RSS of every candidate of the cell."""
    lo, hi = index.lo, index.hi
    lb = torch.zeros(y_u.shape[0], lo.shape[0], dtype=torch.float64, device=y_u.device)
    for j in range(y_u.shape[1]):
        yj = y_u[:, j : j + 1]
        dist = (lo[None, :, j].to(torch.float64) - yj).clamp_(min=0)
        dist += (yj - hi[None, :, j].to(torch.float64)).clamp_(min=0)
        lb.addcmul_(dist, dist * m_u[:, j : j + 1])
    return lb


def _locality_order(y, mask, index: BankIndex, chunk: int = 256):
    """An order of the windows in which neighbours have their likeliest cells close by.

    Sorting by the number of the cell nearest to the observations (cells are numbered along a
    Z-order curve) gives batches of windows that share most of the cells they need.
    """
    y_u, m_u = _observed_keys(y, mask, index)
    nearest = torch.cat(
        [_lower_bounds(y_u[i : i + chunk], m_u[i : i + chunk], index).argmin(1)
         for i in range(0, y.shape[0], chunk)]
    )  # fmt: skip
    return torch.argsort(nearest, stable=True)


_FIELDS_BCT = ("mean", "var", "mean_half_a", "mean_half_b")
_FIELDS_B = ("mc_mse", "ess", "n_kept", "max_loglik", "trunc_bound")


def _empty_result(b, c, t, dev):
    res = {k: torch.full((b, c, t), math.nan, dtype=torch.float64, device=dev) for k in _FIELDS_BCT}
    res.update({k: torch.zeros(b, dtype=torch.float64, device=dev) for k in _FIELDS_B})
    return res


def _fill(res, idx, part):
    for k, v in part.items():
        res[k][idx] = v.to(res[k].dtype)


def _moments(w_sum, s1, s2, centre):
    """Mean and variance from the weight sum, the first and second centred weighted sums."""
    m1 = s1 / w_sum
    return centre + m1, (s2 / w_sum - m1**2).clamp(min=0.0)


def _finish(sums: dict, n_kept, max_loglik, trunc_bound, centre):
    """Result fields from per-half sums ``{'w', 'w2', 's1', 's2'}`` of shape ``(2, B, ...)``."""
    w = sums["w"].sum(0)
    mean, var = _moments(w[:, None, None], sums["s1"].sum(0), sums["s2"].sum(0), centre)
    half_a = _moments(sums["w"][0][:, None, None], sums["s1"][0], sums["s2"][0], centre)[0]
    half_b = _moments(sums["w"][1][:, None, None], sums["s1"][1], sums["s2"][1], centre)[0]
    return {
        "mean": mean,
        "var": var,
        "mean_half_a": half_a,
        "mean_half_b": half_b,
        "mc_mse": (half_a - half_b).pow(2).mean(dim=(1, 2)) / 4,
        "ess": w**2 / sums["w2"].sum(0),
        "n_kept": n_kept.to(torch.float64),
        "max_loglik": max_loglik,
        "trunc_bound": trunc_bound,
    }


def _prior_moments(bank: torch.Tensor, window: int) -> dict[str, torch.Tensor]:
    """Moments of the prior (no observation: every segment has the same weight), by cumsums."""
    n_mem, length, _ = bank.shape
    starts = length - window + 1
    x = bank.to(torch.float64)
    centre = x.mean(dim=(0, 1))[None, :, None]
    xc = x - centre[0, :, 0]
    zero = torch.zeros_like(xc[:, :1])
    c1 = torch.cat([zero, xc.cumsum(1)], 1)
    c2 = torch.cat([zero, (xc**2).cumsum(1)], 1)
    halves = (slice(0, n_mem // 2), slice(n_mem // 2, n_mem))
    t = torch.arange(window, device=bank.device)
    s1 = torch.stack([(c1[h, t + starts] - c1[h, t]).sum(0).T for h in halves])[:, None]
    s2 = torch.stack([(c2[h, t + starts] - c2[h, t]).sum(0).T for h in halves])[:, None]
    w = torch.tensor([[(n_mem // 2) * starts], [(n_mem - n_mem // 2) * starts]], device=bank.device)
    sums = {"w": w.double(), "w2": w.double(), "s1": s1, "s2": s2}
    one = torch.ones(1, dtype=torch.float64, device=bank.device)
    return _finish(sums, one * n_mem * starts, 0 * one, 0 * one, centre)


def _brute_force(y, mask, bank, obs_var, window):
    """Every segment of the bank weighed, window by window, in float64 (for checks)."""
    n_mem, length, n_comp = bank.shape
    starts = length - window + 1
    chunk = max(1, 4_000_000 // (starts * n_comp * window))  # members at a time
    halves = (range(0, n_mem // 2), range(n_mem // 2, n_mem))
    out = []
    for b in range(y.shape[0]):
        rss = torch.zeros(n_mem, starts, dtype=torch.float64, device=bank.device)
        for c, t in mask[b].nonzero().tolist():
            rss += (bank[:, t : t + starts, c].to(torch.float64) - y[b, c, t]) ** 2
        best = rss.min()
        w = torch.exp(-(rss - best) / (2 * obs_var))
        centre = bank[:, 0].to(torch.float64).mean(0)[:, None]
        sums = {"w": [], "w2": [], "s1": [], "s2": []}
        for h in halves:
            s1 = torch.zeros(n_comp, window, dtype=torch.float64, device=bank.device)
            s2 = torch.zeros_like(s1)
            for m0 in range(h.start, h.stop, chunk):
                m1 = min(m0 + chunk, h.stop)
                seg = bank[m0:m1].to(torch.float64).unfold(1, window, 1) - centre
                s1 += torch.einsum("ms,msct->ct", w[m0:m1], seg)
                s2 += torch.einsum("ms,msct->ct", w[m0:m1], seg**2)
            sums["w"].append(w[h.start : h.stop].sum())
            sums["w2"].append((w[h.start : h.stop] ** 2).sum())
            sums["s1"].append(s1)
            sums["s2"].append(s2)
        sums = {k: torch.stack(v)[:, None] for k, v in sums.items()}
        one = torch.ones(1, dtype=torch.float64, device=bank.device)
        out.append(
            _finish(sums, one * rss.numel(), -best[None] / (2 * obs_var), 0 * one, centre[None])
        )
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}


def _pruned(y, mask, bank, index: BankIndex, obs_var, trunc, piece):
    """Posterior moments of a batch of windows over the index's unpruned candidates.

    Each half of the bank keeps its candidates within ``trunc`` (log-weight) of its own best,
    so that the two halves' estimates are as exact as the whole one.
    """
    dev = bank.device
    nb = y.shape[0]
    two_r = 2.0 * obs_var
    span = two_r * trunc  # RSS above the best beyond which a candidate is dropped
    extra = two_r * 5.0  # screening margin, so that the worse half's best is usually covered
    y_u, m_u = _observed_keys(y, mask, index)
    base = (m_u * y_u**2).sum(1)
    lhs = torch.cat([m_u * y_u, m_u], 1)  # RSS = base + lhs @ [-2 K, K^2]^T
    lb = _lower_bounds(y_u, m_u, index)
    lb -= 1e-9 * (base[:, None] + 1.0)  # rounding of the bound against the exact RSS
    ptr = index.ptr.tolist()
    counts = index.counts.to(torch.float64)
    half_of = index.order // index.starts >= index.moments.shape[0] // 2  # per sorted position

    def cell_rss(k, rows):
        keys = index.keys[ptr[k] : ptr[k + 1]].to(torch.float64)
        rhs = torch.cat([-2.0 * keys, keys * keys], 1)
        return torch.addmm(base[rows, None], lhs[rows], rhs.T)

    def by_cell(pairs):  # (k, b) pairs sorted by k -> [(k, rows)]
        ks, n_pairs = torch.unique_consecutive(pairs[:, 0], return_counts=True)
        return zip(ks.tolist(), torch.split(pairs[:, 1], n_pairs.tolist()))

    def screen(sel, thr):
        """Candidates of windows ``sel`` with RSS <= ``thr``; the weight of the others,
        relative to exp(-thr / 2 obs_var): per skipped cell ``count exp(-(lb - thr) / 2r)``,
        per candidate looked at and dropped 1."""
        need = lb[sel] <= thr[:, None]
        expo = ((thr[:, None] - lb[sel]) / two_r).clamp_(max=0.0)
        out = torch.where(need, 0.0, counts * torch.exp(expo)).sum(1)
        got_rows, got_pos, got_rss = [], [], []
        for k, rows in by_cell(need.T.nonzero()):
            rss = cell_rss(k, sel[rows])
            keep = rss <= thr[rows, None]
            i, j = keep.nonzero(as_tuple=True)
            out.index_add_(0, rows, (keep.shape[1] - keep.sum(1)).to(torch.float64))
            got_rows.append(sel[rows[i]])
            got_pos.append(ptr[k] + j)
            got_rss.append(rss[i, j])
        return torch.cat(got_rows), torch.cat(got_pos), torch.cat(got_rss), out

    # a first upper bound of the best RSS: the best candidate of the most promising cell
    first = torch.stack([lb.argmin(1), torch.arange(nb, device=dev)], 1)
    first = first[torch.argsort(first[:, 0], stable=True)]
    ref = torch.full((nb,), math.inf, dtype=torch.float64, device=dev)
    for k, rows in by_cell(first):
        ref[rows] = cell_rss(k, rows).min(1).values

    thr = ref + span + extra
    sel = torch.arange(nb, device=dev)
    parts, left_out = [], torch.zeros(nb, dtype=torch.float64, device=dev)
    best = torch.full((2, nb), math.inf, dtype=torch.float64, device=dev)
    while sel.numel():
        rows, pos, rss, out = screen(sel, thr[sel])
        left_out[sel] = out
        best[:, sel] = math.inf
        best.view(-1).scatter_reduce_(0, half_of[pos].long() * nb + rows, rss, "amin")
        parts.append((rows, pos, rss))
        # a half whose best is beyond the threshold, or too close to it: screen again
        worst = best[:, sel].max(0).values
        short = worst + span > thr[sel]
        sel = sel[short]
        if sel.numel():
            worst = worst[short]
            thr[sel] = torch.where(worst.isinf(), thr[sel] + span, worst + span)
            parts = [tuple(t[~torch.isin(r, sel)] for t in (r, p, q)) for r, p, q in parts]
    rows, pos, rss = (torch.cat(t) for t in zip(*parts))
    half = half_of[pos]
    keep = rss <= best[half.long(), rows] + span
    glob = best.min(0).values
    # weight left out relative to the best candidate's: skipped cells and dropped candidates
    n_drop = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(
        0, rows[~keep], torch.ones_like(rss[~keep])
    )
    left_out = left_out * torch.exp(-(thr - glob) / two_r) + n_drop * math.exp(-trunc)
    rows, cand, rss = rows[keep], index.order[pos[keep]], rss[keep]
    w = torch.exp(-(rss - glob[rows]) / two_r)

    sums, n_kept = _accumulate(index, rows, cand, w, nb, piece)
    centre = index.centre[None, :, None]
    return _finish(sums, n_kept, -glob / two_r, left_out / sums["w"].sum(0), centre)


def _accumulate(index: BankIndex, rows, cand, w, nb, piece):
    """Per-half weighted sums of the segments of candidates ``cand`` for windows ``rows``.

    Sorted by (window, candidate), consecutive starts of a member form pieces of at most
    ``piece`` starts. A piece's ``piece + window - 1`` states (centred, with their squares:
    ``index.moments``) are gathered once, a *slab*, and ``sum_j w_j slab[j:j + window]`` is a
    batched product over ``j`` on a strided (Hankel) view of a block of slabs, in float64.
    """
    bank = index.moments  # (M, L, 2C): x - centre, (x - centre)^2
    window, starts = index.window, index.starts
    dev = bank.device
    n_mem, length, width = bank.shape
    piece = max(1, min(int(piece), starts))
    key, order = torch.sort(rows * (n_mem * starts) + cand)
    rows, cand, w = rows[order], cand[order], w[order]
    n = key.numel()
    m, s = cand // starts, cand % starts
    pos = torch.arange(n, device=dev)
    new_run = torch.ones(n, dtype=torch.bool, device=dev)
    new_run[1:] = (key[1:] != key[:-1] + 1) | (s[1:] == 0)
    run_first = torch.where(new_run, pos, 0).cummax(0).values
    new_piece = new_run | ((pos - run_first) % piece == 0)
    piece_id = new_piece.cumsum(0) - 1
    first = new_piece.nonzero().flatten()
    p_s0 = s[first].clamp(max=starts - piece)  # slabs stay inside the member
    p_row, p_m = rows[first], m[first]
    weights = torch.zeros(first.numel(), piece, dtype=bank.dtype, device=dev)
    weights[piece_id, s - p_s0[piece_id]] = w.to(bank.dtype)
    p_q = p_m * length + p_s0

    half = (m >= n_mem // 2).long()
    w_half = torch.zeros(2, nb, dtype=torch.float64, device=dev)
    w2_half = torch.zeros_like(w_half)
    w_half.index_put_((half, rows), w, accumulate=True)
    w2_half.index_put_((half, rows), w * w, accumulate=True)
    n_kept = torch.bincount(rows, minlength=nb)

    # pieces by (window, half), the longest first; a block's products stop at its longest piece
    p_len = torch.zeros(first.numel(), dtype=torch.int64, device=dev)
    p_len.scatter_reduce_(0, piece_id, s - p_s0[piece_id] + 1, "amax")
    p_group = p_row * 2 + (p_m >= n_mem // 2).long()
    p_order = torch.argsort(p_group * (piece + 1) + piece - p_len)
    p_group, p_len, p_q, weights = p_group[p_order], p_len[p_order], p_q[p_order], weights[p_order]
    bounds = torch.searchsorted(p_group, torch.arange(2 * nb + 1, device=dev)).tolist()
    p_len = p_len.tolist()

    rowlen = (piece + window - 1) * width
    slabs = bank.reshape(-1).as_strided((n_mem * length - piece - window + 2, rowlen), (width, 1))
    sums = torch.zeros(2, nb, window * width, dtype=torch.float64, device=dev)
    block = 1024  # pieces per product
    for g in range(2 * nb):
        b, h = divmod(g, 2)
        for p0 in range(bounds[g], bounds[g + 1], block):
            p1 = min(p0 + block, bounds[g + 1])
            x = slabs.index_select(0, p_q[p0:p1])  # (P, rowlen)
            lj = p_len[p0]
            # x[p, j * width:(j + window) * width] for j < lj, as one strided view
            hankel = x.as_strided((lj, p1 - p0, window * width), (width, rowlen, 1))
            sums[h, b] += torch.bmm(weights[p0:p1, :lj].T[:, None, :], hankel).sum(0)[0]
    sums = sums.reshape(2, nb, window, width).transpose(2, 3)
    c = width // 2
    return {"w": w_half, "w2": w2_half, "s1": sums[:, :, :c], "s2": sums[:, :, c:]}, n_kept


# --------------------------------------------------------------------------------------------
# the solver


class PosteriorMeanSolver(nn.Module):
    """The importance-sampling posterior mean in the project's solver call (no iteration).

    ``forward(cost, x0, y, mask, n_iter, callback=None)`` takes *normalised* tensors
    ``(B, C, T)`` (``y`` zero where not observed), decodes the observations with ``norm_mean``,
    ``norm_std`` (``y_phys = y * std + mean``), computes ``posterior_mean`` with the bank and
    returns the posterior mean encoded back. ``cost`` and ``n_iter`` are ignored; ``callback(1,
    x_hat)`` is called once. The bank is a tensor (``make_bank``), or made on first use from
    ``bank_params`` (keyword arguments of ``make_bank``); it is a plain attribute, not a buffer,
    so it never enters a state dict. Indexes are cached per observed-entry pattern.

    After each call, ``last`` holds the diagnostics in physical units (the ``posterior_mean``
    dict), ``last_std`` the posterior standard deviation of each entry in normalised units
    (like the returned mean) and ``summary()`` the figures to report.
    """

    def __init__(
        self,
        bank: torch.Tensor | None = None,
        obs_var: float = 2.0,
        norm_mean: float = 0.0,
        norm_std: float = 1.0,
        *,
        bank_params: dict | None = None,
        trunc: float = 20.0,
        batch_size: int = 64,
    ):
        super().__init__()
        if bank is None and bank_params is None:
            raise ValueError("give a bank or bank_params")
        self.bank, self.bank_params = bank, dict(bank_params or {})
        self.obs_var, self.trunc, self.batch_size = float(obs_var), float(trunc), int(batch_size)
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self._indexes: dict = {}
        self.last: dict[str, torch.Tensor] | None = None

    def _bank_on(self, device) -> torch.Tensor:
        if self.bank is None:
            self.bank = make_bank(device=device, **self.bank_params)
        if self.bank.device != torch.device(device):
            self.bank = self.bank.to(device)
            self._indexes.clear()
        return self.bank

    def forward(self, cost, x0, y, mask, n_iter, callback=None):
        bank = self._bank_on(y.device)
        y_phys = (y * self.norm_std + self.norm_mean) * mask
        window = y.shape[-1]
        obs = mask.flatten(1).any(1)
        index = None
        if obs.any():
            et, ec = observed_entries(mask[obs])
            key = (window, tuple(et.tolist()), tuple(ec.tolist()))
            if key not in self._indexes:
                self._indexes[key] = build_index(bank, window, et.to(bank.device), ec)
            index = self._indexes[key]
        with torch.no_grad():
            self.last = posterior_mean(
                y_phys.detach(),
                mask.detach(),
                bank,
                self.obs_var,
                window,
                trunc=self.trunc,
                index=index,
                batch_size=self.batch_size,
            )
        x_hat = ((self.last["mean"] - self.norm_mean) / self.norm_std).to(x0.dtype)
        if callback is not None:
            callback(1, x_hat)
        return x_hat

    @property
    def last_std(self) -> torch.Tensor | None:
        """The last call's posterior standard deviation per entry, ``sqrt(E[x^2] - E[x]^2)``
        under the importance weights, in normalised units, float32 ``(B, C, T)``."""
        if self.last is None:
            return None
        return (self.last["var"].sqrt() / self.norm_std).to(torch.float32)

    def summary(self) -> dict[str, float]:
        """The last call's figures: expected R-score (mean posterior variance), ESS, MC error."""
        if self.last is None:
            raise RuntimeError("no call yet")
        r = self.last
        return {
            "expected_rscore": float(r["var"].mean()),
            "ess_min": float(r["ess"].min()),
            "ess_median": float(r["ess"].median()),
            "mc_mse": float(r["mc_mse"].mean()),
            "trunc_bound_max": float(r["trunc_bound"].max()),
        }
