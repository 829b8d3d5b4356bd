"""The screening of a bank's cells for a batch of windows, by the lower bounds of the index.

For each window, the RSS of a candidate is ``base + lhs @ [-2 K, K^2]^T`` for its keys ``K``
(its bank values at the observed entries), computed exactly in float64 cell by cell
(``_CellScreen``). A cell whose lower bound (``index._lower_bounds``) is beyond a window's
threshold is skipped and counted in the weight left out; the candidates of the other cells are
kept when their RSS is within the threshold. ``_screen_halves`` raises the threshold of a window
until the best candidate of each half of the bank is at least ``span`` below it, so that each
half keeps all its candidates within ``span`` of its own best.
"""

from __future__ import annotations

import math

import torch

from .index import BankIndex, _lower_bounds, _observed_keys


def _by_cell(pairs):
    """``(k, b)`` pairs sorted by cell ``k`` -> ``[(k, rows)]``, the windows ``rows`` per cell."""
    ks, n_pairs = torch.unique_consecutive(pairs[:, 0], return_counts=True)
    return zip(ks.tolist(), torch.split(pairs[:, 1], n_pairs.tolist()))


class _CellScreen:
    """The exact RSS of a batch of windows against the index's cells, and their lower bounds.

    ``RSS = base + lhs @ [-2 K, K^2]^T`` for the keys ``K`` of a cell's candidates, in float64;
    ``lb`` ``(B, n_cells)`` bounds every cell's RSS from below (less a rounding margin).
    """

    def __init__(self, y, mask, index: BankIndex, two_r: float):
        y_u, m_u = _observed_keys(y, mask, index)
        self.base = (m_u * y_u**2).sum(1)
        self.lhs = torch.cat([m_u * y_u, m_u], 1)
        self.lb = _lower_bounds(y_u, m_u, index)
        self.lb -= 1e-9 * (self.base[:, None] + 1.0)  # rounding of the bound against the exact RSS
        self.ptr = index.ptr.tolist()
        self.counts = index.counts.to(torch.float64)
        self.index, self.two_r = index, two_r

    def cell_rss(self, k, rows):
        """The RSS ``(len(rows), count_k)`` of windows ``rows`` against the candidates of cell k."""
        keys = self.index.keys[self.ptr[k] : self.ptr[k + 1]].to(torch.float64)
        rhs = torch.cat([-2.0 * keys, keys * keys], 1)
        return torch.addmm(self.base[rows, None], self.lhs[rows], rhs.T)

    def first_bound(self):
        """A first upper bound of each window's best RSS: the best candidate of the most
        promising cell (least lower bound)."""
        nb, dev = self.lb.shape[0], self.lb.device
        first = torch.stack([self.lb.argmin(1), torch.arange(nb, device=dev)], 1)
        first = first[torch.argsort(first[:, 0], stable=True)]
        ref = torch.full((nb,), math.inf, dtype=torch.float64, device=dev)
        for k, rows in _by_cell(first):
            ref[rows] = self.cell_rss(k, rows).min(1).values
        return ref

    def screen(self, sel, thr):
        """Candidates of windows ``sel`` with RSS <= ``thr``; the weight of the others,
        relative to exp(-thr / 2 obs_var): per skipped cell ``count exp(-(lb - thr) / 2r)``,
        per candidate looked at and dropped 1."""
        lb = self.lb[sel]
        need = lb <= thr[:, None]
        expo = ((thr[:, None] - lb) / self.two_r).clamp_(max=0.0)
        out = torch.where(need, 0.0, self.counts * torch.exp(expo)).sum(1)
        got_rows, got_pos, got_rss = [], [], []
        for k, rows in _by_cell(need.T.nonzero()):
            rss = self.cell_rss(k, sel[rows])
            keep = rss <= thr[rows, None]
            i, j = keep.nonzero(as_tuple=True)
            out.index_add_(0, rows, (keep.shape[1] - keep.sum(1)).to(torch.float64))
            got_rows.append(sel[rows[i]])
            got_pos.append(self.ptr[k] + j)
            got_rss.append(rss[i, j])
        return torch.cat(got_rows), torch.cat(got_pos), torch.cat(got_rss), out


def _screen_halves(cells: _CellScreen, half_of, thr, span):
    """Screen the windows until each half of the bank has its best candidate at least ``span``
    below the threshold ``thr`` (updated in place), raising the threshold of the others.

    Returns the window, sorted position and RSS of the candidates kept by the screening, the
    weight left out per window (relative to ``exp(-thr / 2 obs_var)``) and the best RSS per
    half ``(2, B)``.
    """
    nb, dev = thr.shape[0], thr.device
    sel = torch.arange(nb, device=dev)
    parts, left_out = [], torch.zeros(nb, dtype=torch.float64, device=dev)
    best = torch.full((2, nb), math.inf, dtype=torch.float64, device=dev)
    while sel.numel():
        rows, pos, rss, out = cells.screen(sel, thr[sel])
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
    return rows, pos, rss, left_out, best
