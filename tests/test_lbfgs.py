"""L-BFGS 4D-Var, one solve per window: independence of the batch, quadratics, frozen windows."""

import pytest
import torch

from fourdvarnet.config import Experiment, ModelConfig
from fourdvarnet.model import build_model
from fourdvarnet.solvers import LBFGSSolver


@pytest.fixture(scope="module")
def l63_val(l63_files, normalised):
    return normalised(l63_files["val"])


class _Quadratics(torch.nn.Module):
    """``U_i(x) = 1/2 x^T A_i x - b_i^T x`` per window, ``x`` flattened."""

    def __init__(self, mats: torch.Tensor, rhs: torch.Tensor):
        super().__init__()
        self.register_buffer("mats", mats)
        self.register_buffer("rhs", rhs)

    def forward(self, x, y, mask):
        v = x.reshape(len(x), -1)
        return 0.5 * torch.einsum("bi,bij,bj->b", v, self.mats, v) - (self.rhs * v).sum(dim=1)


def _quadratics(conditions, n: int, seed: int = 0):
    """Symmetric positive definite ``A_i`` (``n x n``) with eigenvalues log-spaced from 1 to
    ``conditions[i]``, and random ``b_i``."""
    gen = torch.Generator().manual_seed(seed)
    mats, rhs = [], []
    for c in conditions:
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        eig = torch.logspace(0, torch.log10(torch.tensor(float(c))).item(), n, dtype=torch.float64)
        mats.append(q @ torch.diag(eig) @ q.T)
        rhs.append(torch.randn(n, generator=gen, dtype=torch.float64))
    return torch.stack(mats), torch.stack(rhs)


def _solve(cost, x0, y, mask, n_iter):
    """The solver's output and its iterates, ``(n_iter + 1, *x0.shape)`` with ``x0`` first."""
    xs = [x0.clone()]
    out = LBFGSSolver()(cost, x0, y, mask, n_iter, callback=lambda k, x: xs.append(x.clone()))
    return out, torch.stack(xs)


def test_a_window_gets_the_same_solution_alone_or_in_any_batch(l63_val):
    val, norm, fill = l63_val
    b = val.subset(torch.arange(6))
    exp = Experiment("l63", "none", "rk4", "fsgd")
    model = build_model(exp, 0.01, norm, fill, ModelConfig(), (0.01, 1.0), fsgd_step=1.0)
    with torch.no_grad():
        x0 = model.initial_state(b.y, b.mask).double()
        y, mask = b.y.double(), b.mask.double()
        start, u0 = x0.clone(), model.cost(x0, y, mask)
        batch = LBFGSSolver()(model.cost, x0, y, mask, 60)
        assert torch.equal(x0, start)  # the float64 input is not modified in place
        u = model.cost(batch, y, mask)
        assert (u < 0.5 * u0).all(), u / u0  # the solves went somewhere
        for i in (0, 4):
            alone = LBFGSSolver()(model.cost, x0[i : i + 1], y[i : i + 1], mask[i : i + 1], 60)
            torch.testing.assert_close(alone[0], batch[i], rtol=1e-9, atol=1e-12)
        perm = torch.tensor([3, 5, 0, 4, 1, 2])
        permuted = LBFGSSolver()(model.cost, x0[perm], y[perm], mask[perm], 60)
    torch.testing.assert_close(permuted, batch[perm], rtol=1e-9, atol=1e-12)


def test_each_window_reaches_its_quadratics_minimiser_with_a_non_increasing_cost():
    n = 12  # entries of a window: (4 times, 3 variables)
    mats, rhs = _quadratics((1.0, 10.0, 100.0), n)
    cost = _Quadratics(mats, rhs)
    x_star = torch.linalg.solve(mats, rhs)
    x0 = torch.zeros(3, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        _, xs = _solve(cost, x0, x0, x0, 3 * n)
        u = torch.stack([cost(x, None, None) for x in xs])  # (n_iter + 1, batch)
    err = (xs.flatten(2) - x_star).norm(dim=2) / x_star.norm(dim=1)
    assert (err[-1] < 1e-6).all(), err[-1]
    # measured: 2, 16 and 29 iterations to 1e-6 (one steepest step, then quasi-Newton)
    first = [int((err[:, i] < 1e-6).nonzero()[0]) for i in range(3)]
    assert first[0] <= 3 and first[1] <= 2 * n, first
    assert (u[1:] <= u[:-1]).all(), u
    assert (u[-1] < u[0]).all()


def test_a_converged_window_stays_put_while_the_others_move():
    n = 12
    mats, rhs = _quadratics((10.0, 1.0, 100.0), n, seed=1)
    rhs[0] = 0.0  # window 0 starts at its minimiser 0, with a zero gradient
    cost = _Quadratics(mats, rhs)
    x0 = torch.zeros(3, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        out, xs = _solve(cost, x0, x0, x0, 40)
    assert torch.equal(xs[:, 0], torch.zeros_like(xs[:, 0]))
    # window 1 (A = I) is at its minimiser after two iterations, then frozen
    x_star = torch.linalg.solve(mats[1], rhs[1]).view(4, 3)
    torch.testing.assert_close(xs[2, 1], x_star, rtol=1e-12, atol=1e-14)
    assert all(torch.equal(x, xs[-1, 1]) for x in xs[5:, 1])
    # window 2 (condition 100) is still moving long after
    assert not torch.equal(xs[20, 2], xs[30, 2])
    assert torch.equal(out, xs[-1])


def test_a_window_stops_at_the_tolerance_and_the_others_run_on():
    n = 12
    mats, rhs = _quadratics((1.0, 1000.0), n, seed=2)
    cost = _Quadratics(mats, rhs)
    x0 = torch.zeros(2, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        free = LBFGSSolver()(cost, x0, x0, x0, 60)
        solver = LBFGSSolver(tolerance_grad=1e-3)
        xs = []
        out = solver(cost, x0, x0, x0, 60, callback=lambda k, x: xs.append(x.clone()))
        # the gradient of each window, as the solver sees it (its cost times 12 entries)
        grad = ((torch.einsum("bij,bj->bi", mats, out.reshape(2, -1)) - rhs) * n).abs().amax(1)
    steps = solver.iterations
    # the well-conditioned window stops within a few iterations, the ill-conditioned one later,
    # each with its gradient below the tolerance, the second not far below (it stopped on
    # reaching it; the first, A = I, is solved exactly by its second step)
    assert steps[0] <= 3 and steps[0] < steps[1] < 60, steps
    assert (grad <= 1e-3).all() and grad[1] > 1e-9, grad
    assert all(torch.equal(x[0], xs[-1][0]) for x in xs[int(steps[0]) :])  # stopped, stays put
    assert not torch.equal(out, free)  # without the tolerance, the solves go on
    assert (LBFGSSolver().iterations is None) and LBFGSSolver(tolerance_change=0.1)


def test_a_relative_cost_tolerance_stops_a_window_whose_cost_barely_moves():
    n = 12
    mats, rhs = _quadratics((1000.0,), n, seed=3)
    cost = _Quadratics(mats, rhs)
    x0 = torch.zeros(1, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        loose, tight = LBFGSSolver(tolerance_change=1e-3), LBFGSSolver(tolerance_change=1e-12)
        loose(cost, x0, x0, x0, 200)
        tight(cost, x0, x0, x0, 200)
    assert loose.iterations[0] < tight.iterations[0] < 200, (loose.iterations, tight.iterations)


def test_negative_tolerances_are_refused():
    with pytest.raises(ValueError, match="tolerances"):
        LBFGSSolver(tolerance_grad=-1.0)
