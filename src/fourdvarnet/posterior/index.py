"""The grid index of a bank's candidates, and the lower bounds of the RSS it gives.

A candidate is a segment ``bank[m, s:s + window]`` of the bank, numbered ``m * S + s``. The
candidates are indexed (``build_index``) by cells of a grid over the state at the first observed
time, with, per cell, the box of the candidates' values at every observed entry: the box distance
to ``y`` bounds the RSS of the whole cell from below (``_lower_bounds``), so that the pruned
estimator skips almost every cell without looking at its candidates. The cells are numbered
along a Z-order curve, and windows sorted by their nearest cell (``_locality_order``) share most
of the cells they need. For the paper's bank (2,000 x 5,000, x1 observed 22 times) the index
takes about 12 s, ``M S d`` values of the bank's dtype (880 MB in float32) and twice the bank in
float64 (500 MB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
    _, length, _ = bank.shape
    starts = length - window + 1
    if starts < 1:
        raise ValueError(f"bank members of length {length} are shorter than the window {window}")
    if entries_t.numel() == 0:
        raise ValueError("no observed entry: nothing to index")
    dev = bank.device
    bank = bank.contiguous()
    entries_t, entries_c = entries_t.to(dev), entries_c.to(dev)
    g, cell_size = _first_state_grid(bank, int(entries_t.min()), starts, cell_size, occupancy)
    inverse, counts, rank = _cells_ranked(g)
    del g
    # the cells numbered along a Z-order curve, the candidates sorted by cell
    inverse, counts = rank[inverse], counts[torch.argsort(rank)]
    order = torch.argsort(inverse, stable=True)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=dev)
    ptr[1:] = counts.cumsum(0)
    keys = _sorted_keys(bank, entries_t, entries_c, starts, order)
    lo, hi = _cell_boxes(keys, counts)
    centre, moments = _centred_moments(bank)
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


def _first_state_grid(bank, t_ref: int, starts: int, cell_size: float | None, occupancy: int):
    """Grid coordinates ``(M S, D)`` of the candidates' states at time ``t_ref`` of their window
    (their 3 principal components when the state has more than 3), and the cell side (tuned
    for ``occupancy`` candidates a cell when ``cell_size`` is None)."""
    n_comp = bank.shape[2]
    z = bank[:, t_ref : t_ref + starts, :].reshape(-1, n_comp).to(torch.float64)
    if n_comp > 3:
        zc = z - z.mean(dim=0)
        axes = torch.linalg.eigh(zc.T @ zc).eigenvectors[:, -3:]
        z = zc @ axes
    if cell_size is None:
        cell_size = _tune_cell_size(z, occupancy)
    return _grid(z, float(cell_size)), cell_size


def _cells_ranked(g: torch.Tensor):
    """The non-empty cells of grid coordinates ``g`` ``(n, D)``: each point's cell, the cells'
    counts, and the cells' ranks along a Z-order curve (of one member of each cell)."""
    ids = torch.zeros_like(g[:, 0])
    for j in range(g.shape[1]):
        ids = ids * (int(g[:, j].max()) + 1) + g[:, j]
    ids, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    rep = torch.empty_like(ids).scatter_(0, inverse, torch.arange(g.shape[0], device=g.device))
    rank = torch.argsort(torch.argsort(_morton(g[rep])))
    return inverse, counts, rank


def _sorted_keys(bank, entries_t, entries_c, starts: int, order) -> torch.Tensor:
    """The bank values ``(n, d)`` of the candidates ``order`` at the entries, bank's dtype."""
    n, d = order.numel(), entries_t.numel()
    keys = torch.empty(n, d, dtype=bank.dtype, device=bank.device)
    entries = list(zip(entries_t.tolist(), entries_c.tolist()))
    for j0 in range(0, d, 8):  # a few entries at a time: rows gathered, less memory
        cols = [bank[:, t : t + starts, c] for t, c in entries[j0 : j0 + 8]]
        keys[:, j0 : j0 + 8] = torch.stack(cols, dim=2).reshape(n, -1).index_select(0, order)
    return keys


def _cell_boxes(keys: torch.Tensor, counts: torch.Tensor):
    """Entry-wise minimum and maximum ``(n_cells, d)`` of the keys of each cell (keys sorted by
    cell, ``counts`` per cell)."""
    n, d = keys.shape
    cell = torch.repeat_interleave(torch.arange(counts.numel(), device=keys.device), counts)
    lo = torch.full((counts.numel(), d), math.inf, dtype=keys.dtype, device=keys.device)
    hi = torch.full_like(lo, -math.inf)
    lo.scatter_reduce_(0, cell[:, None].expand(n, d), keys, "amin")
    hi.scatter_reduce_(0, cell[:, None].expand(n, d), keys, "amax")
    return lo, hi


def _centred_moments(bank: torch.Tensor):
    """The centre (per component, float64) of the bank and the centred bank with its squares
    interleaved, ``(M, L, 2 C)`` float64, for the weighted sums."""
    n_mem, length, n_comp = bank.shape
    centre = bank[:, :: max(1, length // 64)].to(torch.float64).mean(dim=(0, 1))
    moments = torch.empty(n_mem, length, 2 * n_comp, dtype=torch.float64, device=bank.device)
    for m0 in range(0, n_mem, 64):
        xc = bank[m0 : m0 + 64].to(torch.float64) - centre
        moments[m0 : m0 + 64] = torch.cat([xc, xc * xc], dim=2)
    return centre, moments


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
