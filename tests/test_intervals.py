"""The tables' intervals: a moving-block bootstrap over overlapping test windows."""

import math

import numpy as np
import pytest
from test_metrics import _write as _files

from fourdvarnet import intervals
from fourdvarnet.tables import make_pairs, make_table


def _moving_average(n, m, rng):
    """y_t = mean of m consecutive N(0, 1) draws: variance 1/m, but the variance of the mean of
    n of them is about 1/n (long-run variance 1), m times the independent-sample value."""
    e = rng.standard_normal(n + m - 1)
    return np.convolve(e, np.ones(m) / m, mode="valid")


def test_block_length_spans_a_window():
    start = np.arange(0, 5000, 2.5)  # 2,000 windows 2.5 steps apart
    assert intervals.block_length(start, 200) == 80
    assert intervals.block_length(np.array([0, 1000]), 200) == 1  # apart: no overlap
    assert intervals.block_length(np.array([7]), 200) == 1


def test_block_indices_are_runs_of_consecutive_windows():
    idx = intervals.block_indices(100, 10, 50, np.random.default_rng(0))
    assert idx.shape == (50, 100) and idx.min() >= 0 and idx.max() < 100
    runs = idx.reshape(50, 10, 10)
    assert (np.diff(runs, axis=-1) == 1).all()


def test_interval_has_the_width_of_the_long_run_variance():
    """On a series whose neighbours are correlated over m values the block bootstrap gives the
    true spread of the mean (about 1/sqrt(n)); resampling windows one by one would give one
    sqrt(m)-th of it."""
    rng = np.random.default_rng(1)
    n, m = 8000, 40
    y = _moving_average(n, m, rng)
    lo, hi = intervals.interval(y, length=4 * m, seed=0)
    expected = 2 * 1.96 / math.sqrt(n)
    assert hi - lo == pytest.approx(expected, rel=0.25)
    lo1, hi1 = intervals.interval(y, length=1, seed=0)
    assert hi1 - lo1 == pytest.approx(expected / math.sqrt(m), rel=0.25)
    assert lo < y.mean() < hi


def test_interval_covers_the_mean_at_its_level():
    """Over repeated series of known mean 0 the 95% interval holds 0 about 95% of the time."""
    rng = np.random.default_rng(2)
    hits = 0
    for k in range(200):
        lo, hi = intervals.interval(_moving_average(2000, 10, rng), length=40, n_boot=400, seed=k)
        hits += lo < 0 < hi
    assert 0.88 <= hits / 200 <= 0.99


def test_seeds_widen_the_interval():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(1000)
    one = intervals.interval(base[None], length=5)
    spread = intervals.interval(np.stack([base - 1, base, base + 1]), length=5)
    assert spread[1] - spread[0] > 3 * (one[1] - one[0])


def test_paired_interval_of_a_shift():
    rng = np.random.default_rng(4)
    a = rng.gamma(2.0, 1.0, size=(1, 1500))
    diff, lo, hi = intervals.paired_interval(a, a - 0.1, length=20)
    assert diff == pytest.approx(-0.1)
    assert lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)  # pairing removes the noise
    assert intervals.verdict(lo, hi, "a", "b") == "b better"
    b = a + rng.normal(0, 0.01, size=a.shape)
    diff, lo, hi = intervals.paired_interval(a, b, length=20)
    assert lo < 0 < hi and intervals.verdict(lo, hi, "a", "b") == "within noise"
    with pytest.raises(ValueError, match="not paired"):
        intervals.paired_interval(a, a[:, :10], length=5)


def _score(row, seed, errors, start):
    scheme, prior, solver = row.split("-")
    return {
        "system": "l63", "scheme": scheme, "prior": prior, "solver": solver, "seed": seed,
        "r_score": float(np.mean(errors)), "window": 200,
        "window_r_score": [float(v) for v in errors], "window_start": [int(s) for s in start],
    }  # fmt: skip


def test_table_with_three_seeds_has_std_and_interval(tmp_path):
    rng = np.random.default_rng(5)
    start = rng.permutation(np.arange(0, 4000, 4))  # files keep the split's (random) order
    recs = [_score("supervised-genn-conv", s, rng.gamma(2, 1, 1000) + s, start) for s in range(3)]
    recs.append(_score("none-rk4-fsgd", 0, rng.gamma(2, 1, 1000) + 3, start))
    t = make_table(_files(tmp_path, recs), "l63").set_index("row")
    g = t.loc["supervised-genn-conv"]
    assert g["n_seeds"] == 3 and g["r_score_std"] > 0
    assert g["r_score_ci_low"] < g["r_score_mean"] < g["r_score_ci_high"]
    f = t.loc["none-rk4-fsgd"]
    assert math.isnan(f["r_score_std"]) and f["r_score_ci_low"] < f["r_score_mean"]
    pairs = make_pairs(_files(tmp_path, recs), "l63").set_index(["row_a", "row_b"])
    p = pairs.loc[("none-rk4-fsgd", "supervised-genn-conv")]
    assert p["diff_b_minus_a"] == pytest.approx(g["r_score_mean"] - f["r_score_mean"])
    assert p["ci_high"] < 0 and p["verdict"] == "supervised-genn-conv better"


def test_table_refuses_evaluations_on_other_windows(tmp_path):
    rng = np.random.default_rng(6)
    recs = [
        _score("none-rk4-fsgd", 0, rng.random(50), np.arange(50)),
        _score("none-rk4-enks", 0, rng.random(50), np.arange(50) + 1),
    ]
    with pytest.raises(ValueError, match="other test windows"):
        make_table(_files(tmp_path, recs), "l63")


def test_table_without_window_errors_leaves_the_interval_empty(tmp_path):
    rec = _score("none-rk4-fsgd", 0, [1.0, 2.0], [0, 1])
    del rec["window_r_score"]
    t = make_table(_files(tmp_path, [rec]), "l63")
    assert math.isnan(t["r_score_ci_low"].iloc[0])
