"""Weak-constraint 4D-Var by L-BFGS, one independent solve per window, batched.

The cost ``U(x, y, Omega)`` is one number per window and a window's cost depends on its own
state only, so each window is minimised on its own: every window has its own memory of
curvature pairs ``(s, y)`` (its last ``history`` accepted steps and gradient changes), its own
quasi-Newton direction and its own step length. The windows are only batched: each tensor
operation treats all of them at once, and a window's arithmetic does not depend on the others
(products are summed row by row, never across windows), so its result is the same alone or in
any batch, in any order.

One iteration, for every window that is not frozen:

1. direction ``d = -H g`` by the two-loop recursion (Nocedal & Wright, *Numerical
   Optimization*, Algorithm 7.4), the initial inverse Hessian ``gamma I`` with
   ``gamma = s.y / y.y`` of the newest pair; with an empty memory ``d = -g``, first tried with the
   step ``min(1, 1 / |g|_1)``;
2. a strong-Wolfe line search (N&W Algorithms 3.5 and 3.6: expansion until the minimum along
   ``d`` is bracketed, then zoom by safeguarded cubic interpolation), each window with its own
   step and bracket; one evaluation of the whole batch per trial, the windows that have found
   their step waiting, unchanged, for the others;
3. a new pair is stored where ``y.s > 1e-10``; a window whose direction is not a descent
   direction, or whose line search finds no decrease, forgets its memory and takes a
   steepest-descent step; a window where that fails too has converged and is frozen.

The memory is a ring of ``history`` slots shared by the batch: slot ``head`` holds every
window's newest pair, slot ``head - j`` its ``j``-th before, so the recursion reads the same slot
of all windows at once. A window that stores no pair in an iteration has its own slots rotated by
one to keep that alignment; a count per window says how many of its slots are valid.

A window also stops (is frozen) once it has converged by a tolerance, when they are set: the
largest entry of its gradient at most ``tolerance_grad``, or the relative decrease of its objective
in an iteration, ``(f_old - f_new) / max(|f_old|, |f_new|)``, at most ``tolerance_change`` (the
tests of SciPy's L-BFGS-B, ``gtol`` and ``ftol``). ``n_iter`` is then a cap; with both at 0 a window
runs until its line searches find no decrease or ``n_iter`` is reached.

As in the joint solver this replaces, the objective of a window is its cost times the number of
entries of a window (a sum of squares rather than a mean: the absolute thresholds then apply to
numbers of order one), computed in float64 on a copy of the cost.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

#: Sufficient decrease (Armijo) and curvature constants of the strong-Wolfe conditions.
C1, C2 = 1e-4, 0.9
#: Most cost evaluations in one line search.
MAX_TRIALS = 25
#: A bracket narrower than this (times the largest entry of the direction) ends a line search.
TOLERANCE_CHANGE = 1e-9
#: A curvature pair is stored only where ``y.s`` exceeds this.
CURVATURE_MIN = 1e-10

log = logging.getLogger(__name__)

Callback = Callable[[int, torch.Tensor], None]
#: ``x (batch, n) -> (f (batch,), g (batch, n))``: the objective of each window and its gradient.
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product ``(batch, n), (batch, n) -> (batch,)``: each row summed on its own,
    so that a window's value does not depend on the batch (a batched matrix product may block
    its sums differently for different batch sizes)."""
    return (a * b).sum(dim=-1)


def pick(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for the windows in ``mask`` (shape ``(batch,)``), ``b`` for the others."""
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)


class Memory:
    """The curvature pairs of every window, in a ring of ``size`` slots aligned across windows."""

    def __init__(self, size: int, like: torch.Tensor):
        batch, n = like.shape
        self.size, self.head = size, 0
        self.s = like.new_zeros(size, batch, n)
        self.y = like.new_zeros(size, batch, n)
        self.rho = like.new_zeros(size, batch)
        self.gamma = like.new_ones(batch)
        self.count = torch.zeros(batch, dtype=torch.long, device=like.device)

    def reset(self, mask: torch.Tensor) -> None:
        """Forget the pairs of the windows in ``mask``."""
        self.count = torch.where(mask, 0, self.count)

    def push(self, s: torch.Tensor, y: torch.Tensor, ys: torch.Tensor, add: torch.Tensor):
        """Store the pair ``(s, y)`` of the windows in ``add``; the others keep theirs."""
        rotate = ~add & (self.count > 0)
        if rotate.any():  # their newest pair moves to the new head with the others'
            idx = rotate.nonzero().squeeze(1)
            for buf in (self.s, self.y, self.rho):
                buf[:, idx] = buf[:, idx].roll(1, dims=0)
        self.head = (self.head + 1) % self.size
        h = self.head
        self.s[h] = pick(add, s, self.s[h])
        self.y[h] = pick(add, y, self.y[h])
        self.rho[h] = torch.where(add, 1.0 / ys, self.rho[h])
        self.gamma = torch.where(add, ys / dot(y, y), self.gamma)
        self.count = torch.where(add, (self.count + 1).clamp(max=self.size), self.count)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """``-H g`` for every window by the two-loop recursion (``-g`` with an empty memory).

        The loops run over the longest memory of the batch; a window's coefficient is zero past
        its own, so that its direction is the same in any batch (up to the sign of a zero)."""
        q, alphas = g.clone(), []
        slots = [(self.head - j) % self.size for j in range(int(self.count.max()))]
        for j, k in enumerate(slots):  # newest to oldest
            a = torch.where(j < self.count, self.rho[k] * dot(self.s[k], q), 0.0)
            q.addcmul_(a.unsqueeze(1), self.y[k], value=-1.0)
            alphas.append(a)
        r = q.mul_(torch.where(self.count > 0, self.gamma, 1.0).unsqueeze(1))
        for j in reversed(range(len(slots))):  # oldest to newest
            k = slots[j]
            b = self.rho[k] * dot(self.y[k], r)
            r.addcmul_(torch.where(j < self.count, alphas[j] - b, 0.0).unsqueeze(1), self.s[k])
        return r.neg_()


def cubic_minimum(a, fa, ga, b, fb, gb):
    """Minimiser of the cubic through ``(a, fa)`` and ``(b, fb)`` with slopes ``ga``, ``gb``
    (N&W Eq. 3.59), per window; NaN where the cubic has no minimum."""
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    d2 = torch.sign(b - a) * (d1 * d1 - ga * gb).sqrt()
    return b - (b - a) * (gb + d2 - d1) / (gb - ga + 2.0 * d2)


def next_trial(lo, hi, prev, scale):
    """The next step of each window: zoom inside a bracket ``[lo, hi]`` (cubic, kept 10% away
    from its ends, else bisection), or expand past ``lo`` (cubic through ``prev`` and ``lo``,
    kept within 2 to 10 times ``lo``). Returns the steps and where the bracket has collapsed."""
    bracketed = torch.isfinite(hi[0])
    low, high = torch.minimum(lo[0], hi[0]), torch.maximum(lo[0], hi[0])
    width = high - low
    zoom = cubic_minimum(*lo, *hi)
    zoom = torch.where(torch.isfinite(zoom), zoom, 0.5 * (low + high))
    zoom = torch.minimum(torch.maximum(zoom, low + 0.1 * width), high - 0.1 * width)
    grow = cubic_minimum(*prev, *lo)
    grow = torch.where(torch.isfinite(grow), grow, 2.0 * lo[0])
    grow = torch.minimum(torch.maximum(grow, 2.0 * lo[0]), 10.0 * lo[0])
    t = torch.where(bracketed, zoom, grow)
    return t, bracketed & (width * scale < TOLERANCE_CHANGE)


def line_search(fg: Objective, x, f0, g0, d, t, active):
    """Strong-Wolfe line search of every window in ``active`` along its ``d``, from step ``t``.

    Returns ``(t, f, g, moved)``: each window's step, the objective and gradient there, and
    whether it found a decrease (a Wolfe step, or the best decreasing step after
    ``MAX_TRIALS`` evaluations); the other windows get step 0 and ``f0``, ``g0``.
    """
    gtd0, zero = dot(g0, d), torch.zeros_like(f0)
    lo = (zero, f0, gtd0)  # the lowest step with sufficient decrease (0 at first)
    hi = (torch.full_like(f0, float("inf")), f0, gtd0)  # the other end of the bracket
    prev, g_lo, done = lo, g0, ~active
    scale = d.abs().amax(dim=1)
    for _ in range(MAX_TRIALS):
        if done.all():
            break
        f, g = fg(x + t.unsqueeze(1) * d)
        gtd, live = dot(g, d), ~done
        decrease = (f <= f0 + C1 * t * gtd0) & (f < lo[1])
        wolfe = decrease & (gtd.abs() <= -C2 * gtd0)
        # past a minimum: the old low end becomes the high end
        flip = live & decrease & ~wolfe & (gtd * torch.sign(hi[0] - lo[0]) >= 0)
        trial, take = (t, f, gtd), live & decrease
        hi = tuple(torch.where(flip, b, c) for b, c in zip(lo, hi))
        hi = tuple(torch.where(live & ~decrease, a, c) for a, c in zip(trial, hi))
        prev = tuple(torch.where(take, a, b) for a, b in zip(lo, prev))
        lo = tuple(torch.where(take, a, b) for a, b in zip(trial, lo))
        g_lo = pick(take, g, g_lo)
        t, collapsed = next_trial(lo, hi, prev, scale)
        done = done | wolfe | collapsed
        t = torch.where(done, 0.0, t)  # the windows done wait at their x
    return lo[0], lo[1], g_lo, active & (lo[0] > 0)


def objective(cost: nn.Module, y, mask, shape, scale: float) -> Objective:
    """Each window's cost times ``scale`` at a flat state ``(batch, n)``, and its gradient."""

    def fg(x):
        with torch.enable_grad():
            z = x.detach().view(shape).requires_grad_(True)
            u = cost(z, y, mask) * scale
            (g,) = torch.autograd.grad(u.sum(), z)
        return u.detach(), g.reshape(x.shape)

    return fg


def first_step(g: torch.Tensor) -> torch.Tensor:
    """The first step along ``-g`` with an empty memory, ``min(1, 1 / |g|_1)`` (as torch's)."""
    return (1.0 / g.abs().sum(dim=1)).clamp(max=1.0)


class LBFGSSolver(nn.Module):
    """Weak-constraint 4D-Var by L-BFGS with a strong-Wolfe line search, each window on its own.

    ``n_iter`` counts L-BFGS iterations (each may evaluate the cost several times in its line
    search); ``callback(k, x)`` is called after each, as for the other solvers. A window's result
    does not depend on the batch it is solved in. ``tolerance_grad`` and ``tolerance_change``
    (0: off) stop a window that has converged (module docstring); after a solve,
    ``iterations`` holds the number of iterations each window of the last batch moved in.
    See the module docstring for the algorithm.
    """

    def __init__(
        self, history: int = 20, tolerance_grad: float = 0.0, tolerance_change: float = 0.0
    ):
        super().__init__()
        if int(history) < 1:
            raise ValueError(f"L-BFGS history must be >= 1, got {history}")
        if tolerance_grad < 0 or tolerance_change < 0:
            raise ValueError(
                f"L-BFGS tolerances must be >= 0, got {tolerance_grad}, {tolerance_change}"
            )
        self.history = int(history)
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)
        self.iterations: torch.Tensor | None = None

    def forward(self, cost, x0, y, mask, n_iter, callback: Callback | None = None):
        dtype, shape = x0.dtype, x0.shape
        scale = float(x0[0].numel())  # sums of squares: thresholds apply to numbers of order one
        fg = objective(copy.deepcopy(cost).double(), y.double(), mask.double(), shape, scale)
        x = x0.detach().double().reshape(shape[0], -1)
        f, g = fg(x)
        memory = Memory(self.history, x)
        frozen = self.converged(g, f, f)
        moves = torch.zeros(shape[0], dtype=torch.long, device=x.device)
        for k in range(n_iter):
            if not frozen.all():
                was = frozen
                x, f_new, g, frozen = self.iterate(fg, x, f, g, memory, frozen)
                moves += (~was & (f_new < f)).long()
                frozen = frozen | self.converged(g, f, f_new)
                f = f_new
            if callback is not None:
                callback(k + 1, x.view(shape).to(dtype))
        self.iterations = moves.cpu()
        log.info(
            "L-BFGS: %d of %d windows stopped within %d iterations; iterations per window: "
            "median %d, max %d", int(frozen.sum()), len(frozen), n_iter,
            int(moves.median()), int(moves.max()),
        )  # fmt: skip
        return x.view(shape).to(dtype)

    def converged(self, g: torch.Tensor, f_old: torch.Tensor, f_new: torch.Tensor) -> torch.Tensor:
        """The windows within a tolerance: largest gradient entry at most ``tolerance_grad``, or
        a relative decrease of the objective at most ``tolerance_change`` (with ``f_old`` equal
        to ``f_new``, at the start, the gradient test only)."""
        done = g.abs().amax(dim=1) <= self.tolerance_grad
        if self.tolerance_change > 0 and f_old is not f_new:
            rel = (f_old - f_new) / torch.maximum(f_old.abs(), f_new.abs()).clamp(min=1e-300)
            done = done | (rel <= self.tolerance_change)
        return done

    @staticmethod
    def iterate(fg: Objective, x, f, g, memory: Memory, frozen):
        """One L-BFGS iteration of every window that is not frozen: ``(x, f, g, frozen)``."""
        d = memory.direction(g)
        gtd = dot(g, d)
        steepest = (memory.count == 0) | ~(gtd < 0)  # an empty memory, or not a descent
        memory.reset(steepest)
        d = pick(steepest, -g, d)
        frozen = frozen | ~(dot(g, d) < 0)  # a zero (or non-finite) gradient
        t = torch.where(steepest, first_step(g), 1.0)
        t, f_new, g_new, moved = line_search(fg, x, f, g, d, t, ~frozen)
        retry = ~frozen & ~moved & ~steepest
        if retry.any():  # no decrease along the quasi-Newton direction: steepest descent
            memory.reset(retry)
            d = pick(retry, -g, d)
            t2, f2, g2, moved2 = line_search(fg, x, f, g, d, first_step(g), retry)
            t, f_new, g_new = (pick(retry, a, b) for a, b in ((t2, t), (f2, f_new), (g2, g_new)))
            moved = moved | moved2
        frozen = frozen | ~moved  # steepest descent found no decrease either: converged
        memory.reset(frozen)
        x_new = x + t.unsqueeze(1) * d
        s, yv = x_new - x, g_new - g
        ys = dot(yv, s)
        memory.push(s, yv, ys, moved & (ys > CURVATURE_MIN))
        return pick(moved, x_new, x), torch.where(moved, f_new, f), pick(moved, g_new, g), frozen
