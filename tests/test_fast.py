"""The fast paths compute what the eager code computes.

CUDA graphs: the graph tests need CUDA and are skipped on the CPU (CI has no GPU); they were run
on an H100 with benchmarks/bench_step.py, which performs the same comparison at the paper's
batch sizes.

The CPU fast path (``fast_cpu``, the compiled gradient of U): every system x prior x learned
solver and every gradient normalisation through the traced graphs (``aot_eager`` backend: the
graphs and the double backward of the fast path, run by eager kernels, in seconds); then the
real compiler (inductor) for the RK4 rows of both systems, two trainings and an evaluation.
Those are the slow part of this file (``test_cpu_fast_compiled_step_matches_eager``,
``test_cpu_fast_training_is_deterministic``): from a cold inductor cache they compile for about
50 s in all on a 2-core machine (the whole file: about 75 s), from a warm one
(``/tmp/torchinductor_$USER``) a few seconds (the file: about 30 s).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import yaml

from fourdvarnet import fast_cpu
from fourdvarnet.config import (
    Experiment,
    GennConfig,
    ModelConfig,
    Stage,
    TrainConfig,
    resolve_preset,
    row_train,
    train_config,
)
from fourdvarnet.data import Normalizer, Split
from fourdvarnet.evaluate import run_solver
from fourdvarnet.fast import FastSolve, GraphedTrainStep
from fourdvarnet.metrics import Scorer
from fourdvarnet.model import build_model
from fourdvarnet.priors import true_prior
from fourdvarnet.solvers import GRAD_NORMS
from fourdvarnet.training import batches, solver_iterations, train, training_loss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def test_batches_of_equal_size_cover_the_epoch_once():
    gen = torch.Generator().manual_seed(0)
    out = batches(103, 10, gen, drop_last=True)
    assert [len(b) for b in out] == [10] * 10
    seen = torch.cat(out)
    assert len(set(seen.tolist())) == 100 and seen.max() < 103
    assert [len(b) for b in batches(7, 10, gen, drop_last=True)] == [7]
    assert [len(b) for b in batches(23, 10, None)] == [10, 10, 3]


def _model(solver, seed=0):
    torch.manual_seed(seed)
    exp = Experiment("l63", "supervised", "genn", solver)
    norm = Normalizer(0.0, 1.0)
    return build_model(exp, 0.01, norm, torch.zeros(3), ModelConfig(), learn_lambdas=True)


def _batch(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 40, generator=g)
    mask = (torch.rand(8, 3, 40, generator=g) < 0.2).float()
    y = (x + 0.1 * torch.randn(8, 3, 40, generator=g)) * mask
    return x.to(device), y.to(device), mask.to(device)


@cuda
@pytest.mark.parametrize("solver", ["conv", "lstm"])
def test_graphed_train_step_matches_eager(solver):
    dev = torch.device("cuda")
    x, y, mask = _batch(dev)
    results = []
    for graphed in (False, True):
        model = _model(solver).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graphed)

        def loss_fn(x, y, mask, model=model):
            return training_loss(model, "supervised", model(y, mask, 5), x, y, mask, 0.05)

        if graphed:
            step = GraphedTrainStep(loss_fn, opt, (x, y, mask))
            losses = [step(x, y, mask) for _ in range(3)]
        else:
            losses = []
            for _ in range(3):
                loss = loss_fn(x, y, mask)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.detach())
        results.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
    (le, pe), (lf, pf) = results
    torch.testing.assert_close(lf, le, rtol=1e-4, atol=1e-6)
    for a, b in zip(pf, pe, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@cuda
@pytest.mark.parametrize("solver", ["conv", "lstm"])
def test_graphed_solve_matches_eager(solver):
    dev = torch.device("cuda")
    _, y, mask = _batch(dev)
    model = _model(solver).to(dev).eval()
    with torch.no_grad():
        eager = model(y, mask, 10)
        fast = FastSolve(model)
        first = fast(y, mask, 10)
        again = fast(y.flip(0), mask.flip(0), 10)  # replay on other data of the same shape
        ref = model(y.flip(0), mask.flip(0), 10)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, ref, rtol=1e-4, atol=1e-5)


# --- The CPU fast path -------------------------------------------------------------------------

#: A small GENN, so that the traced graphs stay small; the L96 one with the shared 1x1 head.
SMALL_GENN = {
    "l63": GennConfig(width=8, hidden=6, kernel=5, pool=4),
    "l96": GennConfig(width=8, hidden=6, kernel=5, pool=4, head=True),
}
CHANNELS = {"l63": 3, "l96": 40}


@pytest.fixture(autouse=True)
def _many_compiled_graphs():
    """This file compiles the gradient for many rows in one process (a job compiles 2-3)."""
    with torch._dynamo.config.patch(recompile_limit=64):
        yield


def _cpu_model(system, prior, solver, grad_norm="max", seed=0):
    torch.manual_seed(seed)
    exp = Experiment(system, "supervised", prior, solver)
    mcfg = ModelConfig(genn=SMALL_GENN[system], grad_norm=grad_norm)
    dt = 0.01 if system == "l63" else 0.05
    model = build_model(
        exp, dt, Normalizer(0.0, 1.0), torch.zeros(CHANNELS[system]), mcfg, learn_lambdas=True
    )
    if prior != "genn":  # as in training: the supervised ODE rows keep the true model
        model.prior.requires_grad_(False)
    return model


def _cpu_batch(system, n=4, length=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (n, CHANNELS[system], length)
    x = torch.randn(shape, generator=g)
    mask = (torch.rand(shape, generator=g) < 0.3).float()
    return x, (x + 0.1 * torch.randn(shape, generator=g)) * mask, mask


def _loss_and_grads(model, batch, n_iter=3):
    x, y, mask = batch
    model.zero_grad(set_to_none=True)
    loss = training_loss(model, "supervised", model(y, mask, n_iter), x, y, mask, 0.05)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same_step(model, batch, backend, n_iter=3):
    loss_e, grads_e = _loss_and_grads(model, batch, n_iter)
    with fast_cpu.enabled(model, backend=backend):
        loss_f, grads_f = _loss_and_grads(model, batch, n_iter)
    assert model.solver.grad_fn is None  # the eager reference is back
    torch.testing.assert_close(loss_f, loss_e, rtol=1e-4, atol=1e-7)
    assert grads_f.keys() == grads_e.keys() and grads_e
    for name in grads_e:
        torch.testing.assert_close(grads_f[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("solver", ["conv", "lstm"])
@pytest.mark.parametrize("prior", ["rk4", "euler", "genn"])
@pytest.mark.parametrize("system", ["l63", "l96"])
def test_cpu_fast_training_step_matches_eager(system, prior, solver):
    """Same loss and parameter gradients (through the unrolled solver, the double backward)."""
    model = _cpu_model(system, prior, solver)
    _assert_same_step(model, _cpu_batch(system), "aot_eager")


@pytest.mark.parametrize("grad_norm", GRAD_NORMS)
def test_cpu_fast_every_grad_norm_gives_the_same_updates(grad_norm):
    model = _cpu_model("l63", "genn", "conv", grad_norm)
    batch = _cpu_batch("l63")
    _assert_same_step(model, batch, "aot_eager", n_iter=4)
    _, y, mask = batch
    with torch.no_grad():
        eager = [model(y, mask, k) for k in range(1, 5)]
        with fast_cpu.enabled(model, backend="aot_eager"):
            fast = [model(y, mask, k) for k in range(1, 5)]
    for a, b in zip(fast, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("system,solver", [("l63", "conv"), ("l96", "lstm")])
def test_cpu_fast_compiled_step_matches_eager(system, solver):
    """The real compiler (inductor), RK4 prior; slow from a cold cache (see the docstring)."""
    model = _cpu_model(system, "rk4", solver)
    _assert_same_step(model, _cpu_batch(system), fast_cpu.BACKEND)


def _tiny_training(seed=0):
    """Two epochs of 3 steps (batch 4) on the compiled path, validation on 6 windows."""
    model = _cpu_model("l63", "rk4", "conv", seed=seed)
    data = Split(*_cpu_batch("l63", n=12, seed=2), {})
    cfg = TrainConfig(
        epochs=2,
        batch_size=4,
        schedule=[Stage(0, 3, 1e-3)],
        pretrain_epochs=0,
        val_n_iter=3,
        device="cpu",
        cpu_fast="on",
    )
    exp = Experiment("l63", "supervised", "rk4", "conv", seed)
    record = train(model, exp, cfg, data, data.subset(torch.arange(6)), progress=False)
    return record, {k: v.clone() for k, v in model.state_dict().items()}, model


def test_cpu_fast_training_is_deterministic():
    """Two identical trainings on the compiled path give identical weights and records."""
    rec_a, weights_a, model = _tiny_training()
    rec_b, weights_b, _ = _tiny_training()
    assert rec_a["fast_path"] == "cpu_compiled" and model.solver.grad_fn is None
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]  # noqa: E731
    assert strip(rec_a) == strip(rec_b)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k


def test_cpu_fast_evaluation_matches_eager(monkeypatch):
    """run_solver with the fast path (a short last batch padded) gives the eager scores."""
    shapes, compiled = [], fast_cpu.compiled_gradient

    def spy(cost, x, *args, **kwargs):
        shapes.append(x.shape[0])
        return compiled(cost, x, *args, **kwargs)

    monkeypatch.setattr(fast_cpu, "compiled_gradient", spy)
    model = _cpu_model("l63", "rk4", "conv")
    x, y, mask = _cpu_batch("l63", n=10, seed=3)
    test, record_at, cpu = Split(x, y, mask, {}), np.arange(4), torch.device("cpu")
    out = {}
    for setting in ("off", "on"):
        scorer = Scorer(true_prior("l63", 0.01), model.prior, 1.0)
        out[setting] = run_solver(model, test, 3, 6, scorer, record_at, cpu, setting)
        out[setting] += (scorer.result(),)
    assert model.solver.grad_fn is None and shapes == [6] * 6  # 2 batches x 3, padded to 6
    (xe, re, ue, *_, se), (xf, rf, uf, *_, sf) = out["off"], out["on"]
    torch.testing.assert_close(xf, xe, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rf, re, rtol=1e-4)
    np.testing.assert_allclose(uf, ue, rtol=1e-4)
    assert se.keys() == sf.keys() and all(np.isclose(sf[k], se[k], rtol=1e-4) for k in se)


def test_padded_solve_matches_the_unpadded_batches():
    """A short last batch padded to the first's size: same windows, callback on the real ones."""
    model = _cpu_model("l63", "rk4", "conv").eval()
    _, y, mask = _cpu_batch("l63", n=7)
    solve, seen = fast_cpu.PaddedSolve(model), []
    with torch.no_grad():
        first = solve(y[:4], mask[:4], 3)
        last = solve(y[4:], mask[4:], 3, callback=lambda k, x: seen.append((k, x.shape[0])))
        ref = model(y, mask, 3)
    assert seen == [(1, 3), (2, 3), (3, 3)] and last.shape[0] == 3
    torch.testing.assert_close(torch.cat([first, last]), ref, rtol=1e-5, atol=1e-6)


def test_cpu_fast_setting_and_the_auto_rule():
    rk4, genn = _cpu_model("l63", "rk4", "conv"), _cpu_model("l63", "genn", "lstm")
    big = fast_cpu.MIN_ITERATIONS
    assert fast_cpu.wanted("auto", "cpu", rk4, big) == fast_cpu.compiler_available()
    assert not fast_cpu.wanted("auto", "cpu", rk4, big - 1)
    assert not fast_cpu.wanted("auto", "cpu", genn, big)  # measured slower with a GENN prior
    assert fast_cpu.wanted("on", "cpu", genn, 1)
    assert not fast_cpu.wanted("off", "cpu", rk4, big)
    exp = Experiment("l63", "none", "rk4", "fsgd")
    fsgd = build_model(exp, 0.01, Normalizer(0.0, 1.0), torch.zeros(3), ModelConfig())
    assert not fast_cpu.wanted("on", "cpu", fsgd, big)  # the learned solvers only
    assert not fast_cpu.wanted("on", "cuda", rk4, big)  # CUDA has its graphs
    with pytest.raises(ValueError, match="cpu_fast"):
        fast_cpu.wanted("yes", "cpu", rk4, big)
    assert train_config({"cpu_fast": False}).cpu_fast == "off"  # YAML's unquoted off


@pytest.mark.parametrize(
    "preset,on", [("ci", False), ("quick", False), ("cpu", True), ("paper", True)], ids=str
)
def test_auto_keeps_short_presets_eager(preset, on):
    """ci and quick trainings never pay a compile; the RK4 rows of the cpu preset (minutes) and
    of the paper preset (hours) take the path."""
    raw = yaml.safe_load((pathlib.Path(__file__).parents[1] / "config.yaml").read_text())
    cfg = resolve_preset({**raw, "preset": preset})
    for system, rows in cfg["experiments"].items():
        for row in (r for r in rows if r.split("-")[1] == "rk4" and not r.startswith("none-")):
            tcfg = train_config(row_train(cfg["train"][system], row))
            n = solver_iterations(tcfg, cfg["data"][system]["n_train"])
            assert (n >= fast_cpu.MIN_ITERATIONS) == on, (system, row, n)
