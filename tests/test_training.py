"""Training of a table row: reproducibility, checkpoints, model selection, failure modes."""

import copy
import math

import pytest
import torch

from fourdvarnet import pipeline, training
from fourdvarnet.config import ConfigError, Experiment, ModelConfig, from_dict, train_config
from fourdvarnet.model import build_model, load_checkpoint, save_checkpoint
from fourdvarnet.priors import ODEPrior
from fourdvarnet.training import TrainingDiverged, validate


def _strip(d, keys=("seconds",)):
    return {k: v for k, v in d.items() if k not in keys}


def test_same_seed_same_training_and_scores(l63_files, l63_trained, small, tmp_path):
    first = l63_trained["record"]
    second = small.train_row(l63_files, tmp_path / "again.pt")
    assert len(first["history"]) == len(second["history"]) == 2
    for a, b in zip(first["history"], second["history"]):
        assert _strip(a) == _strip(b)
    assert _strip(first["pretrain"]) == _strip(second["pretrain"])
    keys = ("history", "seconds", "pretrain")  # pretrain: compared above, its seconds aside
    assert _strip(first, keys) == _strip(second, keys)
    sa = torch.load(l63_trained["checkpoint"], weights_only=False)["state_dict"]
    sb = torch.load(tmp_path / "again.pt", weights_only=False)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    scores = [
        pipeline.evaluate_row(
            "supervised-genn-conv",
            "l63",
            0,
            l63_files["test"],
            small.model,
            small.eval,
            tmp_path / f"recon{i}.nc",
            tmp_path / f"scores{i}.json",
            checkpoint=ckpt,
        )
        for i, ckpt in enumerate((l63_trained["checkpoint"], tmp_path / "again.pt"))
    ]
    timing = ("seconds", "train_seconds")
    assert _strip(scores[0], timing) == _strip(scores[1], timing)
    assert all(math.isfinite(scores[0][k]) for k in ("r_score", "fourdvar_score", "ode_score"))


def test_other_seed_other_training(l63_files, l63_trained, small, tmp_path):
    other = small.train_row(l63_files, tmp_path / "seed1.pt", seed=1)
    assert other["history"][0]["loss"] != l63_trained["record"]["history"][0]["loss"]


def test_record_follows_schedule_and_selection(l63_trained, small):
    rec = l63_trained["record"]
    assert [h["n_iter"] for h in rec["history"]] == [2, 3]
    assert [h["lr"] for h in rec["history"]] == [1e-3, 5e-4]
    pre = rec["pretrain"]
    assert (
        pre["epochs"] == len(pre["loss"]) == len(pre["val_loss"]) == small.train["pretrain_epochs"]
    )
    # supervised rows select on the validation R-score: the best epoch is the argmin
    metrics = [h["val_metric"] for h in rec["history"]]
    assert metrics == [h["val_r"] for h in rec["history"]]
    assert rec["best_epoch"] == min(range(len(metrics)), key=metrics.__getitem__)
    for h in rec["history"]:
        assert math.isfinite(h["loss"]) and h["loss"] > 0


def test_checkpoint_contents(l63_files, l63_trained, normalised):
    ckpt = torch.load(l63_trained["checkpoint"], weights_only=False)
    for key in (
        "state_dict",
        "experiment",
        "model_config",
        "normalizer",
        "train_record",
        "dt",
        "fill",
        "lambdas",
        "package_version",
    ):
        assert key in ckpt, key
    assert ckpt["experiment"] == {
        "system": "l63",
        "scheme": "supervised",
        "prior": "genn",
        "solver": "conv",
        "seed": 0,
    }
    assert ckpt["model_config"]["genn"]["width"] == 12
    val, norm, fill = normalised(l63_files["val"])
    assert ckpt["normalizer"] == {"mean": norm.mean, "std": norm.std}
    assert ckpt["dt"] == 0.01
    torch.testing.assert_close(ckpt["fill"], fill)
    rec = ckpt["train_record"]
    assert rec["val_r_score"] == pytest.approx(l63_trained["record"]["val_r_score"])
    # the weights stored are the selected ones: the loaded model reproduces the validation score
    model, _ = load_checkpoint(l63_trained["checkpoint"])
    out = validate(model, "supervised", val, n_iter=3, batch_size=256)
    assert out["val_r"] * norm.std**2 == pytest.approx(rec["val_r_score"], rel=1e-5)
    best = rec["history"][rec["best_epoch"]]
    assert best["val_r"] * norm.std**2 == pytest.approx(rec["val_r_score"], rel=1e-5)


def test_load_checkpoint_rebuilds_the_trained_model(l63_files, normalised, tmp_path):
    torch.manual_seed(0)
    train, norm, fill = normalised(l63_files["train"])
    val, _, _ = normalised(l63_files["val"])
    exp = Experiment("l63", "supervised", "rk4", "lstm", seed=0)
    mcfg = ModelConfig()
    model = build_model(exp, 0.01, norm, fill, mcfg, (1.0, 1.0), learn_lambdas=True)
    tcfg = train_config({"epochs": 1, "batch_size": 64, "val_n_iter": 2, "device": "cpu"})
    record = training.train(model, exp, tcfg, train.subset(torch.arange(64)), val, norm.std)
    save_checkpoint(tmp_path / "m.pt", model, exp, mcfg, train.attrs, {"train_record": record})
    assert not (tmp_path / "m.pt.part").exists()
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    # training moved the weights away from initialisation, and the file holds them
    assert loaded.cost.lambdas != pytest.approx((1.0, 1.0), abs=1e-6)
    assert loaded.cost.lambdas == pytest.approx(model.cost.lambdas)
    b = val.subset(torch.arange(8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(b.y, b.mask, 4), model(b.y, b.mask, 4))
    for (na, a), (nb, b_) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert na == nb and torch.equal(a, b_), na


def test_unsupervised_training_leaves_the_prior_alone(l63_files, small, tmp_path):
    cfg = dict(small.train, epochs=1)
    small.train_row(l63_files, tmp_path / "u.pt", row="unsupervised-rk4-conv", train_cfg=cfg)
    model, ckpt = load_checkpoint(tmp_path / "u.pt")
    assert isinstance(model.prior, ODEPrior)
    assert model.prior.sigma.item() == 10.0 and model.prior.rho.item() == 28.0
    assert model.cost.lambdas == pytest.approx((0.01, 1.0))  # unsup_lambdas, fixed: FSGD's
    assert ckpt["train_record"]["history"][0]["val_metric"] == pytest.approx(
        ckpt["train_record"]["history"][0]["val_u"]
    )


def test_supervised_rows_start_from_sup_lambdas(l63_files, small, tmp_path):
    # frozen: the checkpoint keeps the configured weights exactly; learned: they move from there
    for learn in (False, True):
        cfg = dict(small.train, epochs=1, sup_lambdas=[0.04, 2.0], learn_lambdas=learn)
        path = tmp_path / f"s{learn}.pt"
        small.train_row(l63_files, path, row="supervised-rk4-conv", train_cfg=cfg)
        lambdas = load_checkpoint(path)[0].cost.lambdas
        if learn:
            assert lambdas != pytest.approx((0.04, 2.0), abs=1e-7)
            assert lambdas == pytest.approx((0.04, 2.0), rel=0.5)
        else:
            assert lambdas == pytest.approx((0.04, 2.0))


@pytest.mark.parametrize("learn_ode", [False, True])
def test_supervised_rk4_rows_keep_the_true_ode_unless_asked(l63_files, small, tmp_path, learn_ode):
    cfg = dict(
        small.train,
        epochs=1,
        schedule=[{"epoch": 0, "n_iter": 2, "lr": 1e-2}],
        learn_ode=learn_ode,
    )
    small.train_row(l63_files, tmp_path / "s.pt", row="supervised-rk4-conv", train_cfg=cfg)
    model, _ = load_checkpoint(tmp_path / "s.pt")
    true = ODEPrior("l63", 0.01)
    same = [
        torch.equal(getattr(model.prior, k), getattr(true, k)) for k in ("sigma", "rho", "beta")
    ]
    assert not any(same) if learn_ode else all(same)
    # the cost weights learn in both cases
    assert model.cost.lambdas != pytest.approx((1.0, 1.0), abs=1e-6)


def test_supervised_genn_rows_learn_the_prior(l63_files, normalised, small):
    train_set, norm, fill = normalised(l63_files["train"])
    val_set, _, _ = normalised(l63_files["val"])
    exp = Experiment("l63", "supervised", "genn", "conv")
    mcfg = from_dict(ModelConfig, small.model, "model")
    model = build_model(exp, 0.01, norm, fill, mcfg, (1.0, 1.0), learn_lambdas=True)
    before = copy.deepcopy(model.prior.state_dict())
    cfg = train_config(dict(small.train, epochs=1, pretrain_epochs=0))
    training.train(model, exp, cfg, train_set, val_set, progress=False)
    assert any(not torch.equal(before[k], v) for k, v in model.prior.state_dict().items())


def test_divergence_raises_and_leaves_no_checkpoint(l63_files, small, tmp_path, monkeypatch):
    real = training.training_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(training.loop, "training_loss", flaky)
    ckpt = tmp_path / "diverged.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 0, batch 1"):
        small.train_row(l63_files, ckpt, row="supervised-rk4-conv")
    assert calls["n"] == 2
    assert not ckpt.exists()
    assert not (tmp_path / "diverged.pt.part").exists()
    assert list(tmp_path.iterdir()) == []


def test_evaluate_row_checkpoint_rules(l63_files, l63_trained, small, tmp_path):
    args = ("l63", 0, l63_files["test"], small.model, small.eval)
    outs = (tmp_path / "r.nc", tmp_path / "s.json")
    with pytest.raises(ValueError, match="checkpoint"):
        pipeline.evaluate_row("supervised-genn-conv", *args, *outs)
    with pytest.raises(ValueError, match="checkpoint"):
        pipeline.evaluate_row("none-rk4-fsgd", *args, *outs, checkpoint=l63_trained["checkpoint"])
    with pytest.raises(ValueError, match="supervised-genn-conv"):
        pipeline.evaluate_row(
            "supervised-rk4-conv", *args, *outs, checkpoint=l63_trained["checkpoint"]
        )
    assert not outs[0].exists() and not outs[1].exists()


def test_train_row_refuses_unlearned_rows(l63_files, small, tmp_path):
    with pytest.raises(ValueError, match="nothing to train"):
        small.train_row(l63_files, tmp_path / "x.pt", row="none-rk4-fsgd")


@pytest.mark.parametrize(
    "row,word",
    [
        ("supervised-wavelet-conv", "wavelet"),
        ("supervised-genn-adam", "adam"),
        ("selfsupervised-genn-conv", "selfsupervised"),
        ("none-rk4-conv", "scheme"),
        ("supervised-rk4-fsgd", "scheme"),
        ("supervised-genn", "scheme-prior-solver"),
        # the direct CNN is supervised, has no prior, and prior none is its only
        ("unsupervised-none-direct", r"scheme = 'unsupervised'.*needs scheme 'supervised'"),
        ("none-none-direct", r"scheme = 'none'.*needs scheme 'supervised'"),
        ("supervised-rk4-direct", r"prior = 'rk4'.*needs prior 'none'"),
        ("supervised-none-conv", r"prior = 'none'.*direct row's only"),
        ("none-none-fsgd", r"prior = 'none'.*direct row's only"),
    ],
)
def test_parse_row_errors(row, word):
    with pytest.raises(ValueError, match=word):
        pipeline.parse_row(row, "l63")


def test_parse_row_ok():
    exp = pipeline.parse_row("unsupervised-genn-lstm", "l96", seed="3")
    assert (exp.system, exp.scheme, exp.prior, exp.solver, exp.seed) == (
        "l96",
        "unsupervised",
        "genn",
        "lstm",
        3,
    )
    with pytest.raises(ConfigError, match="system"):
        pipeline.parse_row("supervised-genn-conv", "l42")
    exp = pipeline.parse_row("supervised-none-direct", "l96")
    assert (exp.scheme, exp.prior, exp.solver) == ("supervised", "none", "direct")


def test_direct_row_trains_on_the_mse_alone(l63_files, small, tmp_path):
    # no prior: prior_weight changes nothing, the RK4 model of its (unused) cost stays the true
    # one, the cost weights do not learn and selection is on the validation R-score
    records = [
        small.train_row(
            l63_files,
            tmp_path / f"w{w}.pt",
            row="supervised-none-direct",
            train_cfg=dict(small.train, prior_weight=w, learn_ode=True, sup_lambdas=[1.0, 1.0]),
        )
        for w in (0.0, 0.5)
    ]
    assert [_strip(h) for h in records[0]["history"]] == [_strip(h) for h in records[1]["history"]]
    model, ckpt = load_checkpoint(tmp_path / "w0.5.pt")
    assert ckpt["experiment"]["solver"] == "direct" and ckpt["model_config"]["direct"]
    assert model.prior.sigma.item() == 10.0 and model.prior.rho.item() == 28.0
    assert model.cost.lambdas == (1.0, 1.0)
    assert records[1]["pretrain"] == {}
    hist = records[1]["history"]
    assert [h["val_metric"] for h in hist] == [h["val_r"] for h in hist]
    assert [h["n_iter"] for h in hist] == [1, 1]  # one pass, the schedule's 2 and 3 aside
    assert [h["lr"] for h in hist] == [1e-3, 5e-4]  # the schedule's learning rates apply
    assert hist[-1]["loss"] < hist[0]["loss"]


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"epochs": 0}, "epochs"),
        ({"schedule": [{"epoch": 1, "n_iter": 5, "lr": 1e-3}]}, "schedule"),
        ({"schedule": [{"epoch": 0, "n_iter": 0, "lr": 1e-3}]}, "n_iter"),
        ({"device": "tpu"}, "device"),
        ({"unsup_lambdas": [0.1]}, "unsup_lambdas"),
        ({"sup_lambdas": [-1.0, 1.0]}, "sup_lambdas"),
        ({"batchsize": 3}, "batchsize"),
    ],
)
def test_train_config_errors(raw, key):
    with pytest.raises(ConfigError, match=key):
        train_config(copy.deepcopy(raw))


def test_model_config_errors():
    with pytest.raises(ConfigError, match="grad_norm"):
        from_dict(ModelConfig, {"grad_norm": "sometimes"}, "model.l63")
    with pytest.raises(ConfigError, match="kernel"):
        from_dict(ModelConfig, {"genn": {"kernel": 4}}, "model.l63")
    with pytest.raises(ConfigError, match=r"model.l63.genn.upsample.*'block', 'linear'"):
        from_dict(ModelConfig, {"genn": {"upsample": "cubic"}}, "model.l63")
    with pytest.raises(ConfigError, match=r"model.l63.genn.kernel = 3: must be >= 5 with linear"):
        from_dict(ModelConfig, {"genn": {"kernel": 3, "upsample": "linear"}}, "model.l63")
    with pytest.raises(ConfigError, match="widht"):
        from_dict(ModelConfig, {"genn": {"widht": 4}}, "model.l63")
    with pytest.raises(ConfigError, match=r"model.l63.direct.kernel"):
        from_dict(ModelConfig, {"direct": {"kernel": 4}}, "model.l63")
    with pytest.raises(ConfigError, match=r"model.l63.direct: unknown key\(s\) \['depth'\]"):
        from_dict(ModelConfig, {"direct": {"depth": 4}}, "model.l63")


def test_an_interrupted_training_resumes_to_the_same_weights(
    l63_files, tmp_path, monkeypatch, small
):
    """A training killed in its second epoch leaves the first epoch's state; run again, it goes
    on from there and ends with the weights and history of an uninterrupted run (CPU)."""
    cfg = dict(small.train, epochs=3)  # GENN: pre-training, three parameter groups, a stage step
    ref = small.train_row(l63_files, tmp_path / "ref.pt", train_cfg=cfg)

    out = tmp_path / "resumed.pt"
    check = training.check_finite

    def killed_in_epoch_1(losses, where):
        check(losses, where)
        if where == "epoch 1":
            raise KeyboardInterrupt

    monkeypatch.setattr(training.loop, "check_finite", killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        small.train_row(l63_files, out, train_cfg=cfg)
    assert not out.exists() and (tmp_path / "resumed.pt.resume").exists()
    assert torch.load(tmp_path / "resumed.pt.resume", weights_only=False)["epoch"] == 0
    epochs_run = []
    monkeypatch.setattr(training.loop, "check_finite", lambda x, where: epochs_run.append(where))
    resumed = small.train_row(l63_files, out, train_cfg=cfg)

    assert epochs_run == ["epoch 1", "epoch 2"]  # went on from the saved epoch, not from 0

    assert not (tmp_path / "resumed.pt.resume").exists()
    assert [h["val_r"] for h in resumed["history"]] == [h["val_r"] for h in ref["history"]]
    a, _ = load_checkpoint(tmp_path / "ref.pt")
    b, _ = load_checkpoint(out)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_a_resume_file_of_another_config_is_ignored(tmp_path):
    path = tmp_path / "m.pt.resume"
    training.save_resume(path, {"key": {"experiment": "a"}, "epoch": 4})
    assert training.load_resume(path, {"experiment": "a"})["epoch"] == 4
    assert training.load_resume(path, {"experiment": "b"}) is None
    assert training.load_resume(tmp_path / "missing", {"experiment": "a"}) is None
