"""The weighted sums of the kept segments, and the result fields made from them.

The weighted sums over the kept segments use their contiguity: consecutive kept starts of one
member form *pieces* of at most ``piece`` starts, whose ``piece + window - 1`` states are read
once and summed with a batched product on a strided (Hankel) view, in float64 (``_accumulate``).
The sums are kept per half of the bank (``m < M / 2`` and the rest), whose separate estimates
measure the Monte Carlo error; ``_finish`` turns them into the posterior mean, the posterior
variance per entry and the effective sample size ``(sum w)^2 / sum w^2``, and
``_prior_moments`` gives the moments of a window without observation.
"""

from __future__ import annotations

import math

import torch

from .index import BankIndex

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


def _accumulate(index: BankIndex, rows, cand, w, nb, piece):
    """Per-half weighted sums of the segments of candidates ``cand`` for windows ``rows``.

    Sorted by (window, candidate), consecutive starts of a member form pieces of at most
    ``piece`` starts. A piece's ``piece + window - 1`` states (centred, with their squares:
    ``index.moments``) are gathered once, a *slab*, and ``sum_j w_j slab[j:j + window]`` is a
    batched product over ``j`` on a strided (Hankel) view of a block of slabs, in float64.
    """
    n_mem, _, width = index.moments.shape  # (M, L, 2C): x - centre, (x - centre)^2
    piece = max(1, min(int(piece), index.starts))
    key, order = torch.sort(rows * (n_mem * index.starts) + cand)
    rows, cand, w = rows[order], cand[order], w[order]
    bounds, p_len, p_q, weights = _pieces(index, key, rows, cand, w, nb, piece)

    half = (cand // index.starts >= n_mem // 2).long()
    w_half = torch.zeros(2, nb, dtype=torch.float64, device=index.moments.device)
    w2_half = torch.zeros_like(w_half)
    w_half.index_put_((half, rows), w, accumulate=True)
    w2_half.index_put_((half, rows), w * w, accumulate=True)
    n_kept = torch.bincount(rows, minlength=nb)

    sums = _hankel_sums(index.moments, index.window, nb, piece, bounds, p_len, p_q, weights)
    c = width // 2
    return {"w": w_half, "w2": w2_half, "s1": sums[:, :, :c], "s2": sums[:, :, c:]}, n_kept


def _piece_ids(key, s, piece):
    """Each sorted candidate's piece number, and the positions of the pieces' first ones.

    A run is a sequence of consecutive starts ``s`` of one member for one window (``key``
    increasing by 1, not crossing a member's start 0); runs are cut every ``piece`` starts.
    """
    n = key.numel()
    pos = torch.arange(n, device=key.device)
    new_run = torch.ones(n, dtype=torch.bool, device=key.device)
    new_run[1:] = (key[1:] != key[:-1] + 1) | (s[1:] == 0)
    run_first = torch.where(new_run, pos, 0).cummax(0).values
    new_piece = new_run | ((pos - run_first) % piece == 0)
    return new_piece.cumsum(0) - 1, new_piece.nonzero().flatten()


def _pieces(index: BankIndex, key, rows, cand, w, nb, piece):
    """The pieces of the sorted candidates, by (window, half), the longest first.

    Returns the bounds of each (window, half) group ``g = 2 b + h`` (pieces ``bounds[g]`` to
    ``bounds[g + 1]``), the pieces' lengths (a list), their first rows in the flattened bank
    (``m L + s0``) and their weights ``(P, piece)`` (weight of start ``s0 + j`` in column ``j``).
    """
    bank = index.moments
    n_mem, length, _ = bank.shape
    starts, dev = index.starts, bank.device
    m, s = cand // starts, cand % starts
    piece_id, first = _piece_ids(key, s, piece)
    p_s0 = s[first].clamp(max=starts - piece)  # slabs stay inside the member
    p_row, p_m = rows[first], m[first]
    weights = torch.zeros(first.numel(), piece, dtype=bank.dtype, device=dev)
    weights[piece_id, s - p_s0[piece_id]] = w.to(bank.dtype)
    p_q = p_m * length + p_s0
    # a block's products stop at its longest piece
    p_len = torch.zeros(first.numel(), dtype=torch.int64, device=dev)
    p_len.scatter_reduce_(0, piece_id, s - p_s0[piece_id] + 1, "amax")
    p_group = p_row * 2 + (p_m >= n_mem // 2).long()
    p_order = torch.argsort(p_group * (piece + 1) + piece - p_len)
    p_group, p_len, p_q, weights = p_group[p_order], p_len[p_order], p_q[p_order], weights[p_order]
    bounds = torch.searchsorted(p_group, torch.arange(2 * nb + 1, device=dev)).tolist()
    return bounds, p_len.tolist(), p_q, weights


def _hankel_sums(bank, window, nb, piece, bounds, p_len, p_q, weights):
    """Per (half, window) sums ``sum_j w_j slab[j:j + window]`` over the pieces, float64
    ``(2, B, 2C, window)``: a batched product on a strided (Hankel) view of blocks of slabs."""
    n_mem, length, width = bank.shape
    rowlen = (piece + window - 1) * width
    slabs = bank.reshape(-1).as_strided((n_mem * length - piece - window + 2, rowlen), (width, 1))
    sums = torch.zeros(2, nb, window * width, dtype=torch.float64, device=bank.device)
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
    return sums.reshape(2, nb, window, width).transpose(2, 3)
