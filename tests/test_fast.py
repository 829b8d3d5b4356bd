"""The fast path computes what the eager code computes, and the CPU trains eager.

CUDA graphs: the graph tests need CUDA and are skipped on the CPU (CI has no GPU); they were run
on an H100 with benchmarks/bench_step.py, which performs the same comparison at the paper's
batch sizes. The CPU has no fast path (its compiled gradient of U was removed: too little gain,
docs/performance.md): a training there runs the eager runner.
"""

from __future__ import annotations

import pytest
import torch

from fourdvarnet.config import Experiment, ModelConfig, Stage, TrainConfig
from fourdvarnet.data import Normalizer, Split
from fourdvarnet.fast import FastSolve, GraphedTrainStep
from fourdvarnet.model import build_model
from fourdvarnet.training import batches, train, training_loss

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


# --- The CPU: eager ----------------------------------------------------------------------------


def _tiny_training(seed=0):
    """Two epochs of 2 steps (batch 4) of a supervised RK4 + aG-Conv row on the CPU, validation
    on 6 windows."""
    torch.manual_seed(seed)
    exp = Experiment("l63", "supervised", "rk4", "conv", seed)
    model = build_model(exp, 0.01, Normalizer(0.0, 1.0), torch.zeros(3), ModelConfig())
    model.prior.requires_grad_(False)  # as in training: the supervised ODE rows keep the model
    data = Split(*_batch("cpu"), {})
    cfg = TrainConfig(
        epochs=2,
        batch_size=4,
        schedule=[Stage(0, 3, 1e-3)],
        pretrain_epochs=0,
        val_n_iter=3,
        device="cpu",
    )
    record = train(model, exp, cfg, data, data.subset(torch.arange(6)), progress=False)
    return record, {k: v.clone() for k, v in model.state_dict().items()}


def test_cpu_training_runs_eager_and_is_deterministic():
    """On the CPU the fast path (the default) is the eager runner; two identical trainings give
    identical weights and records."""
    rec_a, weights_a = _tiny_training()
    rec_b, weights_b = _tiny_training()
    assert rec_a["fast_path"] == "eager"
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]  # noqa: E731
    assert strip(rec_a) == strip(rec_b)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k
