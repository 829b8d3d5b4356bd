"""Scores of Tables 1-2 against hand computations, and the table assembly."""

import json
import math

import pytest
import torch
from torch import nn

from fourdvarnet.metrics import Scorer
from fourdvarnet.tables import PAPER, make_table, write_table


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


# One sequence, 2 components, 3 time steps (normalised units), std = 2.
X = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]])
X_HAT = torch.tensor([[[2.0, 1.0, 0.0], [2.0, 2.0, 0.0]]])  # errors [[1, 0, -1], [2, 0, 0]]
MASK = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
Y = torch.tensor([[[1.0, 3.0, 0.0], [0.0, 0.0, 2.0]]])


def test_scorer_hand():
    scorer = Scorer(Zero(), Zero(), std=2.0, lambdas=(0.5, 2.0))
    scorer.add(X_HAT, X, Y, MASK)
    res = scorer.result()
    assert res["r_score"] == pytest.approx(4.0)
    assert res["r_score_observed"] == pytest.approx(4.0 / 3.0)  # errors 1, 0, 0 observed
    assert res["r_score_unobserved"] == pytest.approx(20.0 / 3.0)  # errors 1, 4, 0
    # 4DVar: observed misfits x_hat - y = 1, -2, -2 -> mean 3; prior (Phi = 0): mean x_hat^2 =
    # (4 + 1 + 0 + 4 + 4 + 0) / 6 = 13/6; U = 0.5 * 3 + 2 * 13/6 = 35/6, times std^2 = 70/3
    assert res["fourdvar_score"] == pytest.approx(70.0 / 3.0)
    # ODE: the row's prior on the truth, mean x^2 = 7/6, times 4
    assert res["ode_score"] == pytest.approx(14.0 / 3.0)
    # second differences in time: truth (0, -4), reconstruction (0, -2): roughness 4 / 16
    assert res["roughness"] == pytest.approx(0.25)


def test_scorer_fourdvar_with_the_rows_own_prior():
    class Half(nn.Module):
        def forward(self, z):
            return 0.5 * z

    scorer = Scorer(Zero(), Half(), std=2.0, lambdas=(0.5, 2.0))
    scorer.add(X_HAT, X, Y, MASK)
    res = scorer.result()
    assert res["fourdvar_score"] == pytest.approx(70.0 / 3.0)  # true prior (here Zero)
    # own prior Phi = x / 2: prior term mean (x_hat / 2)^2 = 13/24; U = 1.5 + 2 * 13/24 = 31/12
    assert res["fourdvar_score_own"] == pytest.approx(31.0 / 12.0 * 4.0)


def test_scorer_without_a_row_prior_leaves_out_its_scores():
    with_prior, without = Scorer(Zero(), Zero(), std=2.0), Scorer(Zero(), None, std=2.0)
    for scorer in (with_prior, without):
        scorer.add(X_HAT, X, Y, MASK)
    a, b = with_prior.result(), without.result()
    assert set(a) - set(b) == {"ode_score", "fourdvar_score_own"}
    assert b == {k: v for k, v in a.items() if k in b}


def test_scorer_accumulates_batches():
    gen = torch.Generator().manual_seed(0)
    x, x_hat, y = (torch.randn(5, 3, 8, generator=gen) for _ in range(3))
    mask = (torch.rand(5, 3, 8, generator=gen) < 0.4).float()

    class Half(nn.Module):
        def forward(self, z):
            return 0.5 * z

    whole = Scorer(Half(), Zero(), std=3.0)
    whole.add(x_hat, x, y, mask)
    parts = Scorer(Half(), Zero(), std=3.0)
    parts.add(x_hat[:2], x[:2], y[:2], mask[:2])
    parts.add(x_hat[2:], x[2:], y[2:], mask[2:])
    a, b = whole.result(), parts.result()
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-6), k
    err = (x_hat - x) ** 2 * 9.0
    assert a["r_score"] == pytest.approx(float(err.mean()), rel=1e-6)
    assert a["r_score_observed"] == pytest.approx(float(err[mask > 0].mean()), rel=1e-6)


def _score(system, row, seed, r, **kw):
    scheme, prior, solver = row.split("-")
    rec = {
        "system": system,
        "scheme": scheme,
        "prior": prior,
        "solver": solver,
        "seed": seed,
        "r_score": r,
        "fourdvar_score": 10 * r,
        "ode_score": 0.1 * r,
        "r_score_observed": r / 2,
        "r_score_unobserved": 2 * r,
    }
    rec.update(kw)
    return rec


def _write(tmp_path, recs):
    paths = []
    for i, rec in enumerate(recs):
        p = tmp_path / f"s{i}.json"
        p.write_text(json.dumps(rec))
        paths.append(p)
    return paths


def test_make_table(tmp_path):
    recs = [
        _score("l63", "supervised-genn-conv", 0, 1.0, val_r_score=0.5),
        _score("l63", "supervised-genn-conv", 1, 3.0, val_r_score=1.5),
        _score("l63", "supervised-genn-conv", 2, 2.0, val_r_score=1.0),
        _score("l63", "unsupervised-rk4-lstm", 0, 5.0, val_r_score=4.0),
        _score("l63", "none-rk4-fsgd", 0, 4.0),
        _score("l63", "none-rk4-fsgd", 1, 6.0),
    ]
    table = make_table(_write(tmp_path, recs), "l63")
    # rows follow the paper's order, whatever the order of the files
    assert list(table["row"]) == ["none-rk4-fsgd", "unsupervised-rk4-lstm", "supervised-genn-conv"]
    t = table.set_index("row")
    assert t.loc["supervised-genn-conv", "n_seeds"] == 3
    assert t.loc["supervised-genn-conv", "r_score_mean"] == pytest.approx(2.0)
    # population std of (1, 3, 2): sqrt(2/3)
    assert t.loc["supervised-genn-conv", "r_score_std"] == pytest.approx((2 / 3) ** 0.5)
    assert t.loc["supervised-genn-conv", "fourdvar_score_mean"] == pytest.approx(20.0)
    assert t.loc["none-rk4-fsgd", "r_score_std"] == pytest.approx(1.0)
    assert math.isnan(t.loc["unsupervised-rk4-lstm", "r_score_std"])  # one seed: no spread
    assert t.loc["supervised-genn-conv", "val_r_score_mean"] == pytest.approx(1.0)
    assert math.isnan(t.loc["none-rk4-fsgd", "val_r_score_mean"])
    # the paper's numbers sit beside ours
    for row in t.index:
        r, u, ode = PAPER["l63"][row]
        assert t.loc[row, "paper_r_score"] == r
        assert t.loc[row, "paper_fourdvar_score"] == u
        if ode.startswith("<"):  # a bound: no number, the bound in the note
            assert math.isnan(t.loc[row, "paper_ode_score"])
            assert t.loc[row, "paper_ode_note"] == ode
        else:
            assert t.loc[row, "paper_ode_score"] == float(ode)
    assert t.loc["supervised-genn-conv", "paper_r_score"] == 1.34
    assert t.loc["supervised-genn-conv", "paper_ode_score"] == 0.16
    assert t.loc["supervised-genn-conv", "label"] == "supervised GENN + aG-Conv"
    assert t.loc["none-rk4-fsgd", "label"] == "FSGD"
    assert t.loc["none-rk4-fsgd", "paper_r_score"] == 3.55


def test_make_table_unknown_row_goes_last(tmp_path):
    recs = [
        _score("l96", "supervised-euler-conv", 0, 1.0),
        _score("l96", "supervised-genn-lstm", 0, 0.5),
        _score("l96", "none-rk4-fsgd", 0, 1.0),
    ]
    table = make_table(_write(tmp_path, recs), "l96")
    assert list(table["row"]) == ["none-rk4-fsgd", "supervised-genn-lstm", "supervised-euler-conv"]
    assert math.isnan(table["paper_r_score"].iloc[-1])
    assert table["paper_r_score"].iloc[1] == 0.38


def test_make_table_wrong_system(tmp_path):
    paths = _write(tmp_path, [_score("l63", "none-rk4-fsgd", 0, 1.0)])
    with pytest.raises(ValueError, match="l63"):
        make_table(paths, "l96")
    with pytest.raises(ValueError):
        make_table([], "l63")


def test_write_table_csv(tmp_path):
    import pandas as pd

    paths = _write(tmp_path, [_score("l63", "none-rk4-fsgd", s, 3.0 + s) for s in range(2)])
    out = tmp_path / "t" / "table1.csv"
    write_table(paths, "l63", out)
    df = pd.read_csv(out)
    assert list(df["row"]) == ["none-rk4-fsgd"]
    assert df["r_score_mean"].iloc[0] == pytest.approx(3.5)
    assert df["paper_r_score"].iloc[0] == pytest.approx(3.55)


def test_make_table_ratio_to_the_bayes_floor(tmp_path):
    recs = [
        _score("l63", "none-rk4-fsgd", 0, 3.0),
        _score("l63", "none-rk4-enks", 0, 1.5),
        _score("l63", "none-rk4-bayes", 0, 0.6, bayes_ess_min=50.0, bayes_expected_rscore=0.58),
        _score("l63", "supervised-genn-conv", 0, 1.0),
        _score("l63", "supervised-genn-conv", 1, 2.0),
    ]
    table = make_table(_write(tmp_path, recs), "l63")
    # the classic baselines follow FSGD, the floor comes last
    assert list(table["row"]) == [
        "none-rk4-fsgd", "none-rk4-enks", "supervised-genn-conv", "none-rk4-bayes"
    ]  # fmt: skip
    t = table.set_index("row")
    assert t["ratio"].to_dict() == pytest.approx(
        {
            "none-rk4-fsgd": 5.0,
            "none-rk4-enks": 2.5,
            "supervised-genn-conv": 2.5,
            "none-rk4-bayes": 1.0,
        }
    )
    assert t.loc["none-rk4-bayes", "bayes_ess_min"] == 50.0
    assert math.isnan(t.loc["none-rk4-fsgd", "bayes_ess_min"])


def test_direct_row_sits_before_the_floor_with_empty_prior_scores(tmp_path):
    import pandas as pd

    direct = _score("l63", "supervised-none-direct", 0, 1.2)
    del direct["ode_score"]  # no prior: evaluate leaves it out
    recs = [
        _score("l63", "none-rk4-bayes", 0, 0.6),
        direct,
        _score("l63", "supervised-genn-conv", 0, 1.0),
        _score("l63", "none-rk4-fsgd", 0, 3.0),
    ]
    out = tmp_path / "table1.csv"
    table = write_table(_write(tmp_path, recs), "l63", out)
    assert list(table["row"]) == [
        "none-rk4-fsgd", "supervised-genn-conv", "supervised-none-direct", "none-rk4-bayes"
    ]  # fmt: skip
    t = table.set_index("row")
    assert t.loc["supervised-none-direct", "ratio"] == pytest.approx(2.0)
    assert math.isnan(t.loc["supervised-none-direct", "ode_score_mean"])
    assert math.isnan(t.loc["supervised-none-direct", "paper_r_score"])  # not in the paper
    line = out.read_text().splitlines()[3].split(",")
    assert line[1] == "supervised-none-direct"
    header = out.read_text().splitlines()[0].split(",")
    assert line[header.index("ode_score_mean")] == ""  # an empty cell, not a number
    assert pd.read_csv(out)["r_score_mean"].notna().all()
    assert line[header.index("r_score_std")] == ""  # one seed: no spread, an empty cell
    assert line[header.index("label")] == "supervised direct CNN (U-Net)"


def test_the_table_takes_the_preset_of_its_score_files_and_refuses_two(tmp_path):
    import pandas as pd

    recs = [_score("l63", "none-rk4-fsgd", 0, 3.0, preset="quick")]
    write_table(_write(tmp_path, recs), "l63", tmp_path / "t.csv")
    assert (pd.read_csv(tmp_path / "t.csv")["preset"] == "quick").all()
    recs.append(_score("l63", "none-rk4-enks", 0, 2.0, preset="cpu"))
    with pytest.raises(ValueError, match="different presets"):
        make_table(_write(tmp_path, recs), "l63")
