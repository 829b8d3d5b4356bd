"""Evaluation of a row: the scores can be recomputed from the reconstruction file alone."""

import json
import re

import numpy as np
import pytest
import torch
import xarray as xr

from fourdvarnet import evaluate, pipeline
from fourdvarnet.cost import VariationalCost
from fourdvarnet.evaluate import record_iterations
from fourdvarnet.priors import true_prior


def _evaluate(row, files, small, tmp_path, checkpoint=None):
    scores = pipeline.evaluate_row(
        row,
        "l63",
        0,
        files["test"],
        small.model,
        small.eval,
        tmp_path / "recon.nc",
        tmp_path / "scores.json",
        checkpoint=checkpoint,
    )
    return scores, xr.load_dataset(tmp_path / "recon.nc")


def _check_file(ds, scores, n_iter):
    x, x_hat, mask = ds.x.values, ds.x_hat.values, ds.mask.values
    err = (x_hat - x) ** 2
    assert scores["r_score"] == pytest.approx(err.mean(), rel=1e-5)
    assert scores["r_score_observed"] == pytest.approx(err[mask == 1].mean(), rel=1e-5)
    assert scores["r_score_unobserved"] == pytest.approx(err[mask == 0].mean(), rel=1e-5)
    # the 4DVar-score: U with l1 = 0.01, l2 = 1 and the true RK4 prior, in physical units
    mean, std = ds.attrs["train_mean"], ds.attrs["train_std"]
    cost = VariationalCost(true_prior("l63", 0.01, mean, std), 0.01, 1.0).double()

    def enc(a):
        return torch.as_tensor((np.nan_to_num(a) - mean) / std).permute(0, 2, 1)

    m = torch.as_tensor(mask, dtype=torch.float64).permute(0, 2, 1)
    u = cost(enc(x_hat), enc(ds.y.values) * m, m).mean().item() * std**2
    assert scores["fourdvar_score"] == pytest.approx(u, rel=1e-4)
    # the pathway ends at the reconstruction and starts at the interpolated observations
    assert ds.iteration.values[0] == 0 and ds.iteration.values[-1] == n_iter
    assert ds.pathway_r_score.values[-1] == pytest.approx(scores["r_score"], rel=1e-5)
    assert ds.pathway_fourdvar_score.values[-1] == pytest.approx(scores["fourdvar_score"], rel=1e-5)
    assert json.loads(ds.attrs["scores"])["r_score"] == scores["r_score"]
    # the per-window errors (file and score record, in the split's order) average to it
    per_window = err.mean(axis=(1, 2))
    assert np.allclose(ds.window_r_score.values, per_window, rtol=1e-5)
    assert np.mean(scores["window_r_score"]) == pytest.approx(scores["r_score"], rel=1e-5)
    assert scores["window_start"] == [int(v) for v in ds.start.values]
    assert scores["n_iter"] == n_iter


def test_fsgd_row(l63_files, small, tmp_path, normalised):
    scores, ds = _evaluate("none-rk4-fsgd", l63_files, small, tmp_path)
    _check_file(ds, scores, small.eval["fsgd"]["n_iter"])
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    # the FSGD pathway descends the 4DVar cost it minimises (same weights, same prior)
    path = ds.pathway_fourdvar_score.values
    assert (np.diff(path) < 0).all()
    # pathway at iteration 0 = R-score of the interpolation
    test, norm, fill = normalised(l63_files["test"])
    from fourdvarnet.data import interpolate

    x0 = interpolate(test.y, test.mask, fill)
    r0 = float(((x0 - test.x) ** 2).mean()) * norm.std**2
    assert ds.pathway_r_score.values[0] == pytest.approx(r0, rel=1e-5)
    # the true prior's ODE-score is tiny (one RK4 step of dt against the RK4 truth at dt/5)
    assert scores["ode_score"] < 1e-3


def test_long_solve_logs_progress(l63_files, small, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(evaluate, "PROGRESS_SECONDS", 0.0)
    caplog.set_level("INFO", logger="fourdvarnet.evaluate")
    _, ds = _evaluate("none-rk4-fsgd", l63_files, small, tmp_path)
    found = [
        tuple(map(float, m.groups()))
        for m in (
            re.search(r"batch (\d+)/(\d+): iteration (\d+)/(\d+), R-score (\S+)", r.message)
            for r in caplog.records
        )
        if m
    ]
    n_iter, n_batch = small.eval["fsgd"]["n_iter"], 2  # 32 test windows in batches of 16
    assert all(f[1] == n_batch and f[3] == n_iter for f in found)
    r = np.zeros((n_batch, ds.sizes["iteration"]))
    for j in range(n_batch):
        mine = [f for f in found if f[0] == j + 1]
        assert [f[2] for f in mine] == list(ds.iteration.values)
        r[j] = [f[4] for f in mine]
    # the logged R-scores are the batch's, in physical units: equal batches average to the pathway
    np.testing.assert_allclose(r.mean(axis=0), ds.pathway_r_score.values, rtol=1e-3)


def test_learned_row(l63_files, l63_trained, small, tmp_path):
    scores, ds = _evaluate(
        "supervised-genn-conv", l63_files, small, tmp_path, l63_trained["checkpoint"]
    )
    _check_file(ds, scores, small.eval["n_iter"])
    assert scores["val_r_score"] == pytest.approx(l63_trained["record"]["val_r_score"])
    assert scores["experiment"] == "l63/supervised-genn-conv/seed0"
    assert ds.attrs["checkpoint"] == str(l63_trained["checkpoint"])
    for key in ("git_commit", "package_version", "torch_version", "eval_config", "cost_lambdas"):
        assert key in ds.attrs


def test_fixed_point_row(l63_files, small, tmp_path):
    scores, ds = _evaluate("none-rk4-fixed_point", l63_files, small, tmp_path)
    _check_file(ds, scores, small.eval["fixed_point_iter"])
    # observed entries keep the observations
    obs = ds.mask.values == 1
    np.testing.assert_allclose(ds.x_hat.values[obs], ds.y.values[obs], rtol=1e-5, atol=1e-5)


def test_direct_row_trains_and_evaluates_through_the_pipeline(l63_files, small, tmp_path):
    ckpt = tmp_path / "direct.pt"
    record = small.train_row(l63_files, ckpt, row="supervised-none-direct")
    scores, ds = _evaluate("supervised-none-direct", l63_files, small, tmp_path, ckpt)
    _check_file(ds, scores, 1)  # one pass of the CNN, whatever evaluate.n_iter
    assert scores["val_r_score"] == pytest.approx(record["val_r_score"])
    assert (scores["prior"], scores["solver"]) == ("none", "direct")
    # no prior: the scores that need the row's own prior are left out
    assert "ode_score" not in scores and "fourdvar_score_own" not in scores
    assert 0 < scores["r_score"] < np.var(ds.x.values) * 3
    # the checkpoint rebuilds the same network: a second evaluation gives the same file
    again, ds2 = _evaluate("supervised-none-direct", l63_files, small, tmp_path / "b", ckpt)
    np.testing.assert_array_equal(ds.x_hat.values, ds2.x_hat.values)


def test_record_iterations():
    np.testing.assert_array_equal(record_iterations(5, False), np.arange(6))
    it = record_iterations(150_000, True)
    assert it[0] == 0 and it[1] == 1 and it[-1] == 150_000
    assert (np.diff(it) > 0).all() and len(it) <= 61
