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
and the RSS of the others is computed exactly (float64; ``screen``). The result is the
brute-force estimate restricted to ``{RSS <= RSS_best(half) + 2 obs_var trunc}``, exactly. The
weight left out, relative to the weight kept, is bounded per window by ``trunc_bound``: each
dropped candidate looked at counts ``exp(-trunc)`` (relative to the best), each skipped cell
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
from .index import BankIndex, _locality_order, build_index, observed_entries
from .screen import _CellScreen, _screen_halves


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
    window = _check_inputs(y, mask, bank, obs_var, window)
    out_device, bank = y.device, bank.contiguous()
    y, mask, res, todo = _start(y, mask, bank, window)
    if brute_force:
        batches = [todo[i : i + batch_size] for i in range(0, todo.numel(), batch_size)]
        compute = _on_windows(_brute_force, y, mask, bank, obs_var, window)
        _run_batches(res, batches, compute, 1, todo.numel(), progress)
    else:
        index, todo = _index_and_order(y, mask, bank, window, todo, index)
        compute = _on_windows(_pruned, y, mask, bank, index, obs_var, trunc, piece)
        _run_on_threads(res, todo, compute, batch_size, workers, bank.device, progress)
    return {k: v.to(out_device) for k, v in res.items()}


def _check_inputs(y, mask, bank, obs_var, window) -> int:
    """Raise ``ValueError`` on inconsistent shapes or a non-positive ``obs_var``; the window."""
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
    return window


def _start(y, mask, bank, window):
    """The observations (float64, zero where not observed) and the mask (bool) on the bank's
    device, the result fields with the prior moments filled in for the windows without
    observation, and the numbers of the others (the windows to do)."""
    dev = bank.device
    mask = (mask > 0).to(dev)
    y = torch.where(
        mask, y.to(dev, torch.float64), torch.zeros((), dtype=torch.float64, device=dev)
    )
    res = _empty_result(y.shape[0], y.shape[1], window, dev)
    observed = mask.flatten(1).any(dim=1)
    if (~observed).any():
        _fill(res, (~observed).nonzero().flatten(), _prior_moments(bank, window))
    return y, mask, res, observed.nonzero().flatten()


def _on_windows(fn, y, mask, *args):
    """The batch computation ``idx -> fn(y[idx], mask[idx], *args)`` for ``_run_batches``."""
    return lambda idx: fn(y[idx], mask[idx], *args)


def _index_and_order(y, mask, bank, window, todo, index: BankIndex | None):
    """The index for the windows ``todo`` (built when ``None``, else checked to serve them), and
    ``todo`` in an order that groups windows needing the same cells."""
    if todo.numel():
        et, ec = observed_entries(mask[todo])
        if index is None:
            index = build_index(bank, window, et, ec)
        elif index.window != window or not index.serves(et, ec):
            raise ValueError("index was built for other observed entries or another window")
        todo = todo[_locality_order(y[todo], mask[todo], index)]
    return index, todo


def _run_on_threads(res, todo, compute, batch_size, workers, dev, progress):
    """``_run_batches`` over batches of ``todo`` split among ``workers`` threads.

    Many small tensor operations: on the CPU, one intra-op thread each (OpenMP threads only
    spin-wait on them, badly so on a busy machine) and the batches on ``workers`` threads.
    """
    if workers is None:
        workers = torch.get_num_threads() if dev.type == "cpu" else 1
    workers = max(1, min(int(workers), todo.numel()))
    size = max(1, min(batch_size, -(-todo.numel() // workers)))
    batches = [todo[i : i + size] for i in range(0, todo.numel(), size)]
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    try:
        _run_batches(res, batches, compute, workers, todo.numel(), progress)
    finally:
        torch.set_num_threads(threads)


def _run_batches(res, batches, compute, workers, total, progress):
    """Fill ``res`` with ``compute(idx)`` for each batch ``idx`` of window numbers, on ``workers``
    threads; ``progress(done, total)`` after each batch."""
    done = [0]
    lock = threading.Lock()

    def run(idx):
        part = compute(idx)
        with lock:
            _fill(res, idx, part)
            done[0] += idx.numel()
            if progress is not None:
                progress(done[0], total)

    if workers == 1:
        for idx in batches:
            run(idx)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, batches))


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
    two_r = 2.0 * obs_var
    span = two_r * trunc  # RSS above the best beyond which a candidate is dropped
    extra = two_r * 5.0  # screening margin, so that the worse half's best is usually covered
    cells = _CellScreen(y, mask, index, two_r)
    half_of = index.order // index.starts >= index.moments.shape[0] // 2  # per sorted position
    thr = cells.first_bound() + span + extra
    rows, pos, rss, left_out, best = _screen_halves(cells, half_of, thr, span)
    half = half_of[pos]
    keep = rss <= best[half.long(), rows] + span
    glob = best.min(0).values
    # weight left out relative to the best candidate's: skipped cells and dropped candidates
    n_drop = torch.zeros(y.shape[0], dtype=torch.float64, device=bank.device).index_add_(
        0, rows[~keep], torch.ones_like(rss[~keep])
    )
    left_out = left_out * torch.exp(-(thr - glob) / two_r) + n_drop * math.exp(-trunc)
    rows, cand, rss = rows[keep], index.order[pos[keep]], rss[keep]
    w = torch.exp(-(rss - glob[rows]) / two_r)

    sums, n_kept = _accumulate(index, rows, cand, w, y.shape[0], piece)
    centre = index.centre[None, :, None]
    return _finish(sums, n_kept, -glob / two_r, left_out / sums["w"].sum(0), centre)
