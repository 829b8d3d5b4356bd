"""GENN pre-training: the fixed count (the paper's), the plateau rule on the validation split,
the presets, and the same prior whether a row pre-trains it or the workflow's shared job."""

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fourdvarnet import pipeline
from fourdvarnet.config import (
    ConfigError,
    check_train_rows,
    resolve_preset,
    system_train,
    train_config,
)
from fourdvarnet.training import loop

CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


class Shift(nn.Module):
    """A one-parameter 'prior' Phi(x) = a x, a = 0 at first (the best: 1)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.a * x


def data(n=64, offset=0.5):
    torch.manual_seed(0)
    return torch.randn(n, 3, 8) + offset


def scripted(monkeypatch, values):
    """Make the validation loss read ``values`` in turn, noting the prior's weights at each."""
    seen = []

    def fake(prior, x, batch_size=1024):
        seen.append(copy.deepcopy(prior.state_dict()))
        return values[len(seen) - 1]

    monkeypatch.setattr(loop, "one_step_loss", fake)
    return seen


def test_a_fixed_count_runs_all_epochs_and_keeps_the_last_weights():
    prior, x, val = Shift(), data(), data(16)
    rec = loop.pretrain_prior(prior, x, 5, 1e-2, 16, torch.Generator().manual_seed(0), val=val)
    assert rec["epochs"] == 5 == len(rec["loss"]) == len(rec["val_loss"])
    assert rec["lr"] == [1e-2] * 5 and rec["stopped"] == "" and rec["best_epoch"] == 4
    # the kept (last) weights' validation loss, in physical units through std
    rec2 = loop.pretrain_prior(
        Shift(), x, 5, 1e-2, 16, torch.Generator().manual_seed(0), val=val, std=3.0
    )
    assert rec2["val_ode_score"] == pytest.approx(loop.one_step_loss(prior, val) * 9.0)
    assert rec2["val_loss"] == rec["val_loss"]


def test_the_plateau_rule_follows_the_validation_loss(monkeypatch):
    """Whatever the training loss does (it improves throughout), a validation loss that stops
    improving divides the rate by 10, then stops the pre-training; the best-validation weights
    are kept."""
    vals = [1.0, 0.5, 0.499, 0.6, 0.7, 0.45, 0.46, 0.47, 0.48, 0.1]
    seen = scripted(monkeypatch, vals)
    prior = Shift()
    rec = loop.pretrain_prior(
        prior, data(), 50, 1e-2, 16, torch.Generator().manual_seed(0), val=data(16),
        patience=3, tol=0.01, drops=1, std=2.0,
    )  # fmt: skip
    # epochs 2-4 no better than 0.5 by 1%: a drop after epoch 4; the best 0.45 at 5, then
    # epochs 6-8 no better: the stop (0.1 at epoch 9 is never reached)
    assert rec["lr"] == [1e-2] * 5 + [1e-3] * 4
    assert rec["epochs"] == 9 and "after 1 rate drops" in rec["stopped"]
    assert rec["loss"][-1] < rec["loss"][0]  # the training loss improved throughout
    assert rec["best_epoch"] == 5 and rec["val_ode_score"] == pytest.approx(0.45 * 4)
    assert torch.equal(prior.a.detach(), seen[5]["a"])  # the best epoch's weights


def test_the_plateau_rule_needs_the_validation_split_and_has_caps(monkeypatch):
    with pytest.raises(ValueError, match="validation"):
        loop.pretrain_prior(Shift(), data(), 5, 1e-2, 16, torch.Generator(), patience=2)
    scripted(monkeypatch, [1.0 / (i + 1) for i in range(100)])  # never flat
    rec = loop.pretrain_prior(
        Shift(), data(), 7, 1e-2, 16, torch.Generator(), val=data(16), patience=2, tol=0.01
    )
    assert rec["epochs"] == 7 and rec["stopped"] == ""  # pretrain_epochs caps it
    rec = loop.pretrain_prior(
        Shift(), data(), 7, 1e-2, 16, torch.Generator(), val=data(16), patience=2,
        max_seconds=1e-9,
    )  # fmt: skip
    assert rec["epochs"] == 1 and "time budget" in rec["stopped"]


def _preset(name):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["preset"] = name
    return resolve_preset(raw)


def test_the_paper_preset_pretrains_a_fixed_count_and_cpu_quick_to_a_plateau():
    for system in ("l63", "l96"):
        cfg = train_config(system_train(_preset("paper")["train"][system]))
        assert cfg.pretrain_patience == 0 and cfg.pretrain_epochs == 20  # the authors' recipe
        assert cfg.pretrain_max_seconds == 0
    for name in ("cpu", "quick"):
        cfg = train_config(system_train(_preset(name)["train"]["l63"]))
        assert cfg.pretrain_patience > 0 and cfg.pretrain_epochs > 0
    quick = train_config(system_train(_preset("quick")["train"]["l63"]))
    assert quick.pretrain_epochs <= 50 and 0 < quick.pretrain_max_seconds <= 60  # stays quick


def test_a_row_cannot_set_its_own_plateau_rule():
    cfg = {
        "experiments": {"l63": ["unsupervised-genn-conv"]},
        "train": {"l63": {"rows": {"unsupervised-genn-conv": {"pretrain_patience": 3}}}},
    }
    with pytest.raises(ConfigError, match="pretrain_patience"):
        check_train_rows(cfg)


def test_a_row_pretraining_its_own_prior_equals_the_workflow(l63_files, small, tmp_path):
    """The CLI path (a GENN row pre-trains its own prior) and the workflow's (a shared
    pre-training job, then the row) give the same record and weights for the same seed."""
    cfg = dict(
        small.train, epochs=2, pretrain_epochs=6, pretrain_patience=1, pretrain_tol=0.2,
        pretrain_drops=1,
    )  # fmt: skip
    prior = tmp_path / "genn.pt"
    shared = pipeline.pretrain_genn(
        "l63", 0, l63_files["train"], l63_files["val"], small.model, cfg, prior
    )
    args = ("unsupervised-genn-conv", "l63", 0, l63_files["train"], l63_files["val"])
    wf = pipeline.train_row(*args, small.model, cfg, tmp_path / "wf.pt", pretrained=prior)
    own = pipeline.train_row(*args, small.model, cfg, tmp_path / "own.pt")
    strip = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert strip(own["pretrain"]) == strip(shared) == strip(wf["pretrain"])
    assert [strip(h) for h in own["history"]] == [strip(h) for h in wf["history"]]
    a = torch.load(tmp_path / "wf.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "own.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
