"""Importance-sampling posterior moments of windows: pruned (the default) and brute force.

Every segment of the bank (``bank``) is one sample of the prior of a window, and its importance
weight is the Gaussian likelihood of the window's observations, ``w = exp(-RSS / (2 obs_var))``
with ``RSS = sum_Omega (y - x)^2``. The posterior mean, the posterior variance per entry and the
effective sample size ``(sum w)^2 / sum w^2`` follow; the members are split in two halves
(``m < M / 2`` and the rest) whose separate estimates measure the Monte Carlo error.

Pruning (``posterior_mean``, the default): a candidate whose log-weight is more than ``trunc``
below the best one's (``RSS > RSS_best + 2 obs_var trunc``) is dropped, the best of its own
half of the bank, so that both halves are as exact as the whole. Cells of the grid index
(``index``) whose lower bound is beyond that are skipped without looking at their candidates,
and the RSS of the others is computed exactly (float64). The result is the brute-force estimate
restricted to ``{RSS <= RSS_best(half) + 2 obs_var trunc}``, exactly. The weight left out,
relative to the weight kept, is bounded per window by ``trunc_bound``: each dropped candidate
looked at counts ``exp(-trunc)`` (relative to the best), each skipped cell
``count * exp(-(lower bound - RSS_best) / (2 obs_var))``; it is at most
``M S exp(-trunc) / ESS`` in any case (``trunc = 20``: about 1e-7 for the paper's bank). The
weighted sums over the kept segments are in ``accumulate``.

Cost, the paper's set-up (bank 2,000 x 5,000, x1 observed 22 times, ``trunc = 20``, 2 shared
CPU cores): bank 15 s, index 12 s, then 0.13-0.16 s a window; the index takes ``M S d`` values
of the bank's dtype (880 MB in float32) and twice the bank in float64 (500 MB). On the CPU the
windows are split over ``workers`` Python threads with one intra-op thread each: the many
small tensor operations gain nothing from OpenMP threads, which only spin-wait on them.

``brute_force=True`` weighs every segment of the bank without pruning (about 80 s a window of
the paper's set-up on those 2 cores), for checks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .accumulate import _accumulate, _empty_result, _fill, _finish, _prior_moments
from .index import (
    BankIndex,
    _locality_order,
    _lower_bounds,
    _observed_keys,
    build_index,
    observed_entries,
)


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
