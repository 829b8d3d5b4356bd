"""The training recipe's options (train.<system>: warm-up, cosine decay, clipping, the cost
weights' log-ratio, the solvers' learned step scale, truncated back-propagation, the stopping
rules, the collapse check) and the GENN pre-training shared by the rows of a seed."""

import math

import pytest
import torch
import yaml
from torch import nn

from fourdvarnet import pipeline, training
from fourdvarnet.config import (
    ConfigError,
    Experiment,
    ModelConfig,
    TrainConfig,
    check_train_rows,
    from_dict,
    resolve_preset,
    row_train,
    train_config,
)
from fourdvarnet.cost import VariationalCost
from fourdvarnet.model import build_model
from fourdvarnet.priors import ODEPrior
from fourdvarnet.solvers import ConvSolver, LSTMSolver
from fourdvarnet.training.loop import FLAT_MIN_EPOCHS, flattened, last_rate_epoch, stop_reason
from fourdvarnet.training.optim import Group, Schedule, clip
from fourdvarnet.training.steps import EagerRunner

RECIPE_OFF = {
    "warmup_steps": 0,
    "decay": "none",
    "clip_grad_norm": 0.0,
    "lambda_param": "sqrt",
    "lambda_lr_factor": 1.0,
    "backprop_iters": 0,
    "max_seconds": 0.0,
    "flat_stop": 0.0,
}


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "schedule": [{"epoch": 0, "n_iter": 5, "lr": 1e-3}]}
    return train_config({**base, **kw})


def test_the_default_schedule_is_the_stage_rates():
    c = train_config(
        {
            "epochs": 3,
            "schedule": [
                {"epoch": 0, "n_iter": 5, "lr": 1e-3},
                {"epoch": 2, "n_iter": 10, "lr": 1e-4},
            ],
        }
    )
    s = Schedule(c, steps_per_epoch=10)
    assert [s.lr(e, 10 * e + 3) for e in range(3)] == [1e-3, 1e-3, 1e-4]
    assert [s.n_iter(e) for e in range(3)] == [5, 5, 10]
    assert Schedule(c, 10, one_pass=True).n_iter(2) == 1


def test_warmup_then_cosine_rates_at_given_steps():
    s = Schedule(cfg(warmup_steps=4, decay="cosine", min_lr_factor=0.1), steps_per_epoch=25)
    total = 100
    cosine = lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / (total - 1)))  # noqa: E731
    assert s.lr(0, 0) == pytest.approx(1e-3 * 1 / 5 * cosine(0))
    assert s.lr(0, 3) == pytest.approx(1e-3 * 4 / 5 * cosine(3))
    assert s.lr(0, 4) == pytest.approx(1e-3 * cosine(4))  # warm-up over
    assert s.lr(3, total - 1) == pytest.approx(1e-4)  # the last step: min_lr_factor
    assert s.lr(1, 49) == pytest.approx(1e-3 * cosine(49))
    rates = [s.lr(step // 25, step) for step in range(4, total)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # decreasing after the warm-up


def test_clipping_bounds_the_gradient_norm_of_a_runner_step():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x = torch.randn(8, 4) * 100

    def grad_norm():
        return torch.sqrt(sum((p.grad**2).sum() for p in net.parameters()))

    for max_norm in (0.0, 0.5):
        runner = EagerRunner(net, [Group("solver", list(net.parameters()))], 1e-3, max_norm)
        runner.step(lambda x: (net(x) ** 2).mean(), (x,))
        if max_norm:
            assert grad_norm() == pytest.approx(max_norm, rel=1e-5)
        else:
            assert grad_norm() > 10  # unclipped
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    clip([Group("g", [p])], 0.0)
    assert p.grad.tolist() == [3.0, 4.0, 0.0]


def test_log_ratio_weights_give_the_cost_of_the_sqrt_pair():
    prior = ODEPrior("l63", 0.01)
    torch.manual_seed(1)
    x, y = torch.randn(5, 3, 50), torch.randn(5, 3, 50)
    mask = (torch.rand(5, 3, 50) < 0.3).float()
    sq = VariationalCost(prior, 0.3, 2.0, learn_lambdas=True)
    lr = VariationalCost(prior, 0.3, 2.0, learn_lambdas=True, param="log_ratio")
    assert torch.allclose(sq(x, y, mask), lr(x, y, mask), rtol=1e-6)
    assert lr.lambdas == pytest.approx(sq.lambdas, rel=1e-6)
    assert [p.numel() for p in lr.weight_parameters()] == [1]
    with torch.no_grad():  # only the ratio moves: the product stays
        lr.log_ratio.add_(1.0)
    l1, l2 = lr.lambdas
    assert l1 * l2 == pytest.approx(0.6, rel=1e-6) and l1 / l2 == pytest.approx(0.15 * math.e)
    with pytest.raises(ValueError, match="positive"):
        VariationalCost(prior, 0.0, 1.0, param="log_ratio")


@pytest.mark.parametrize("solver_cls", [ConvSolver, LSTMSolver])
def test_a_learned_step_scale_starts_neutral_and_learns(solver_cls):
    cost = VariationalCost(ODEPrior("l63", 0.01), 0.01, 1.0)
    torch.manual_seed(2)
    x0, y = torch.randn(4, 3, 40), torch.randn(4, 3, 40)
    mask = (torch.rand(4, 3, 40) < 0.3).float()
    torch.manual_seed(3)
    plain = solver_cls(1, 3)
    torch.manual_seed(3)
    scaled = solver_cls(1, 3, learn_step=True)
    assert plain.log_step is None
    assert torch.allclose(plain(cost, x0, y, mask, 4), scaled(cost, x0, y, mask, 4))
    scaled(cost, x0, y, mask, 4).pow(2).mean().backward()
    assert scaled.log_step.grad is not None and scaled.log_step.grad != 0
    with torch.no_grad():  # exp(s) scales every step
        scaled.log_step.fill_(math.log(2.0))
        one = plain(cost, x0, y, mask, 1)
        assert torch.allclose(scaled(cost, x0, y, mask, 1) - x0, 2 * (one - x0), atol=1e-6)


def test_truncated_backprop_leaves_the_earlier_iterations_without_gradient(monkeypatch):
    cost = VariationalCost(ODEPrior("l63", 0.01), 0.01, 1.0)
    torch.manual_seed(4)
    x0, y = torch.randn(2, 3, 40), torch.randn(2, 3, 40)
    mask = (torch.rand(2, 3, 40) < 0.3).float()
    solver = ConvSolver(1, 3)
    tracked, real = [], solver.update

    def spy(x, g, s):
        out = real(x, g, s)
        tracked.append(out[0].requires_grad)
        return out

    monkeypatch.setattr(solver, "update", spy)
    x_all = solver(cost, x0, y, mask, 5)
    assert tracked == [True] * 5
    tracked.clear()
    x_last = solver(cost, x0, y, mask, 5, grad_last=2)
    assert tracked == [False, False, False, True, True]
    assert torch.allclose(x_all, x_last)  # the same forward values
    full = torch.autograd.grad(x_all.sum(), list(solver.parameters()), allow_unused=True)
    part = torch.autograd.grad(x_last.sum(), list(solver.parameters()), allow_unused=True)
    assert not all(torch.allclose(a, b) for a, b in zip(full, part) if a is not None)


def test_flattening_and_time_budget_rules():
    assert not flattened([5.0, 4.0, 3.0], 0.02)  # fewer than 4 epochs
    assert flattened([5.0, 4.0, 3.0, 2.99], 0.02)  # last quarter: 0.3% better
    assert not flattened([5.0, 4.0, 3.0, 2.5], 0.02)  # 17% better
    assert flattened([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 3.05, 3.0], 0.02)  # no new best
    hist = [{"val_metric": m} for m in (5.0, 4.0, 3.0, 2.99)]
    assert stop_reason(cfg(), hist, 1e6) == ""  # both rules off
    assert "time budget" in stop_reason(cfg(max_seconds=10), hist, 11.0)
    # flat, but before FLAT_MIN_EPOCHS epochs: go on
    assert stop_reason(cfg(flat_stop=0.02), hist, 1.0) == ""
    hist = [{"val_metric": m} for m in (5.0, 4.0, 3.0) + (2.99,) * (FLAT_MIN_EPOCHS - 3)]
    assert "2%" in stop_reason(cfg(flat_stop=0.02), hist, 1.0)


def test_flat_stop_waits_for_the_last_rate_stage():
    stages = [
        {"epoch": 0, "n_iter": 5, "lr": 3e-3},
        {"epoch": 5, "n_iter": 10, "lr": 3e-3},  # iterations only: not a rate stage
        {"epoch": 20, "n_iter": 10, "lr": 1e-3},
        {"epoch": 30, "n_iter": 20, "lr": 1e-3},
    ]
    c = cfg(epochs=40, flat_stop=0.01, schedule=stages)
    assert last_rate_epoch(c) == 20
    assert last_rate_epoch(cfg()) == 0
    flat = [{"val_metric": 1.0} for _ in range(20)]  # epochs 0-19, flat from the start
    assert flattened([h["val_metric"] for h in flat], 0.01)
    assert stop_reason(c, flat, 1.0) == ""  # the last rate stage has not started
    # the last stage started: it needs 4 epochs of its own before it can be flat
    assert stop_reason(c, flat + [{"val_metric": 0.5}] * 3, 1.0) == ""
    assert "last rate stage" in stop_reason(c, flat + [{"val_metric": 0.5}] * 4, 1.0)
    # a last stage still improving goes on
    going = flat + [{"val_metric": 0.5 - 0.05 * i} for i in range(8)]
    assert stop_reason(c, going, 1.0) == ""


def test_a_training_stops_at_its_time_budget(l63_files, small, tmp_path):
    record = small.train_row(
        l63_files, tmp_path / "b.pt", row="supervised-rk4-conv",
        train_cfg=dict(small.train, epochs=5, max_seconds=1e-3),
    )  # fmt: skip
    assert len(record["history"]) == 1 and "time budget" in record["stopped"]


def test_a_collapsed_network_is_refused_naming_row_and_seed(
    l63_files, small, tmp_path, monkeypatch
):
    real = training.loop.validate

    def constant(*args, **kwargs):
        return {**real(*args, **kwargs), "val_tvar": 0.0}

    monkeypatch.setattr(training.loop, "validate", constant)
    with pytest.raises(training.TrainingCollapsed, match=r"l63/supervised-none-direct/seed1: "):
        small.train_row(
            l63_files, tmp_path / "c.pt", row="supervised-none-direct", seed=1,
            train_cfg=dict(small.train, collapse_ratio=1e-3),
        )  # fmt: skip
    assert not (tmp_path / "c.pt").exists()


def test_validation_reports_the_variance_in_time(l63_files, normalised):
    val, norm, fill = normalised(l63_files["val"])
    exp = Experiment("l63", "supervised", "rk4", "conv")
    model = build_model(exp, 0.01, norm, fill, ModelConfig(), (0.01, 1.0))
    out = training.validate(model, "supervised", val, 2, len(val), solve=lambda y, m, n: val.x)
    assert out["val_tvar"] == pytest.approx(1.0) and out["val_r"] == 0.0
    flat = training.validate(model, "supervised", val, 2, len(val), solve=lambda y, m, n: 0 * val.x)
    assert flat["val_tvar"] == 0.0


def test_a_shared_pretrained_genn_is_read_not_recomputed(l63_files, small, tmp_path):
    """The rows of a seed start from one pre-trained GENN: the same prior weights whichever
    row reads it, no pre-training of their own, and the history of the shared one."""
    prior = tmp_path / "genn.pt"
    history = pipeline.pretrain_genn(
        "l63", 0, l63_files["train"], l63_files["val"], small.model, small.train, prior
    )
    assert history["epochs"] == len(history["loss"]) == small.train["pretrain_epochs"]
    assert torch.load(prior, weights_only=False)["history"] == history
    cfg = dict(small.train, epochs=1)
    models = {}
    for row in ("supervised-genn-conv", "unsupervised-genn-lstm"):
        rec = pipeline.train_row(
            row, "l63", 0, l63_files["train"], l63_files["val"], small.model, cfg,
            tmp_path / f"{row}.pt", pretrained=prior,
        )  # fmt: skip
        assert rec["pretrain"] == history
        models[row] = torch.load(tmp_path / f"{row}.pt", weights_only=False)["state_dict"]
    saved = torch.load(prior, weights_only=False)["state_dict"]
    frozen = {k.removeprefix("cost.prior."): v for k, v in models["unsupervised-genn-lstm"].items()}
    assert all(torch.equal(saved[k], frozen[k]) for k in saved)  # unsupervised: frozen as read
    with pytest.raises(ValueError, match="no GENN prior"):
        pipeline.train_row(
            "supervised-rk4-conv", "l63", 0, l63_files["train"], l63_files["val"], small.model,
            cfg, tmp_path / "x.pt", pretrained=prior,
        )  # fmt: skip
    other = dict(small.model, genn=dict(small.model["genn"], width=16))
    with pytest.raises(ValueError, match="delete it and run again"):
        pipeline.train_row(
            "supervised-genn-conv", "l63", 0, l63_files["train"], l63_files["val"], other,
            cfg, tmp_path / "y.pt", pretrained=prior,
        )  # fmt: skip


def test_row_overrides_of_the_shared_pretraining_are_refused():
    cfg = {
        "experiments": {"l63": ["supervised-genn-conv"]},
        "train": {"l63": {"rows": {"supervised-genn-conv": {"pretrain_epochs": 3}}}},
    }
    with pytest.raises(ConfigError, match="shared by the rows of a seed"):
        check_train_rows(cfg)


def test_the_paper_preset_keeps_the_authors_recipe():
    raw = yaml.safe_load(open("config.yaml"))
    paper = resolve_preset(raw, {"preset": "paper"})
    for system, train in paper["train"].items():
        rows = [r for r in paper["experiments"][system] if not r.startswith("none-")]
        for row in rows:
            values = train_config(row_train(train, row), f"train.{system}.rows.{row}")
            assert {k: getattr(values, k) for k in RECIPE_OFF} == RECIPE_OFF, (system, row)
        model = from_dict(ModelConfig, paper["model"][system], f"model.{system}")
        assert model.learn_step is False
