"""Figures 2-4 render from evaluation files (synthetic ones, in the pipeline's format)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.collections import PolyCollection

from fourdvarnet import figures
from fourdvarnet.config import EvalConfig, Experiment, ModelConfig
from fourdvarnet.data import to_dataset, write_netcdf
from fourdvarnet.evaluate import evaluate, record_iterations
from fourdvarnet.model import build_model
from fourdvarnet.posterior import PosteriorMeanSolver, make_bank

ROWS = {  # label -> (scheme, prior, solver, error scale)
    "FSGD": ("none", "rk4", "fsgd", 1.0),
    "unsupervised RK4": ("unsupervised", "rk4", "conv", 0.7),
    "supervised RK4": ("supervised", "rk4", "conv", 0.5),
    "supervised GENN": ("supervised", "genn", "conv", 0.4),
}


def _write_eval(path, system, truth, every, row):
    """An evaluation file as ``evaluate`` writes it, with a made-up reconstruction."""
    scheme, prior, solver, scale = row
    rng = np.random.default_rng(0)
    mask = np.zeros(truth.shape, dtype=np.int8)
    mask[:, ::every, 0 if system == "l63" else slice(None, None, 2)] = 1
    y = np.where(mask > 0, truth + rng.normal(0, 1.4, truth.shape), np.nan).astype(np.float32)
    x_hat = (truth + rng.normal(0, scale, truth.shape)).astype(np.float32)
    iters = record_iterations(3000 if solver == "fsgd" else 20, log_spaced=solver == "fsgd")
    decay = 1 + 9 * np.exp(-iters / (500 if solver == "fsgd" else 3))
    attrs = {
        "experiment": f"{system}/{scheme}-{prior}-{solver}/seed0",
        "system": system,
        "scheme": scheme,
        "prior": prior,
        "solver": solver,
        "seed": 0,
        "scores": json.dumps({"r_score": scale**2, "fourdvar_score": 0.1}),
    }
    dt = 0.01 if system == "l63" else 0.05
    ds = to_dataset(truth, y, mask, dt, attrs, x_hat=x_hat)
    ds = ds.assign_coords(iteration=("iteration", iters))
    ds["pathway_r_score"] = ("iteration", scale**2 * decay)
    ds["pathway_fourdvar_score"] = ("iteration", 0.1 * decay)
    write_netcdf(ds, path)
    return path


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """Tiny L63 (6 sequences, 3 components) and L96 (4 sequences, 12 components) files."""
    root = tmp_path_factory.mktemp("evals")
    t = np.arange(80)[None, :, None]
    out = {}
    for system, n, n_comp, every in (("l63", 6, 3, 8), ("l96", 4, 12, 4)):
        phase = np.arange(n)[:, None, None] + np.arange(n_comp)[None, None, :]
        truth = (8 * np.sin(0.1 * t + phase)).astype(np.float32)
        out[system] = {
            label: _write_eval(root / f"{system}-{i}.nc", system, truth, every, row)
            for i, (label, row) in enumerate(ROWS.items())
        }
    return out


def _check_outputs(pdf, png):
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min(img.shape[:2]) >= 600
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std(axis=0).max() > 0.05  # not blank
    assert len(np.unique(rgb[::7], axis=0)) > 50  # lines, text and colour maps, not one colour
    return img


def test_fig2(evals, tmp_path):
    pdf, png = tmp_path / "fig2.pdf", tmp_path / "sub" / "fig2.png"
    figures.fig2(evals["l63"], pdf, png, preset="ci")
    img = _check_outputs(pdf, png)
    assert img.shape[1] > img.shape[0]  # landscape: pathways above, three pdfs below


def test_fig3(evals, tmp_path):
    rows = {k: evals["l63"][k] for k in ("supervised RK4", "supervised GENN")}
    figures.fig3(rows, tmp_path / "fig3.pdf", tmp_path / "fig3.png", preset="ci")
    _check_outputs(tmp_path / "fig3.pdf", tmp_path / "fig3.png")
    # deterministic: the same inputs give the same image
    figures.fig3(rows, tmp_path / "again.pdf", tmp_path / "again.png", preset="ci")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "fig3.png").read_bytes()


def test_fig3_draws_the_posterior_band(evals, tmp_path):
    with xr.open_dataset(evals["l63"]["supervised GENN"]) as ds:
        bayes = ds.load()
    std = 0.3 + 0.1 * np.abs(np.sin(bayes["x"].values))
    bayes["x_std"] = (bayes["x_hat"].dims, std.astype(np.float32))
    bayes.attrs.update(scheme="none", prior="rk4", solver="bayes")
    write_netcdf(bayes, tmp_path / "bayes.nc")
    rows = {"RK4": evals["l63"]["supervised RK4"], "Bayes": tmp_path / "bayes.nc"}
    fig = figures.fig3(rows, tmp_path / "f.pdf", tmp_path / "f.png", n_examples=2)
    _check_outputs(tmp_path / "f.pdf", tmp_path / "f.png")
    s = figures.example_indices(bayes.sizes["sample"], 2)[1]
    ax = fig.axes[1 * 2 + 1]  # component x2 (row 1) of the second example (column 1)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [b.get_label() for b in bands] == ["Bayes ± 2 std"]  # the RK4 row has no x_std
    lo = bayes["x_hat"].values[s, :, 1] - 2 * std[s, :, 1]
    hi = bayes["x_hat"].values[s, :, 1] + 2 * std[s, :, 1]
    y = bands[0].get_paths()[0].vertices[:, 1]
    assert y.min() == pytest.approx(lo.min(), rel=1e-5)
    assert y.max() == pytest.approx(hi.max(), rel=1e-5)
    assert "Bayes ± 2 std" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_bayes_evaluation_holds_the_weighted_posterior_std(l63_files, normalised):
    test, norm, fill = normalised(l63_files["test"])
    test = test.subset(torch.arange(5))
    bank = make_bank("l63", 0.01, members=4, steps=300, window=200, spinup=3.0, seed=2)
    obs_var = 100.0  # wide weights on this small bank: the std is not ~0 everywhere
    solver = PosteriorMeanSolver(bank, obs_var, norm.mean, norm.std)
    exp = Experiment("l63", "none", "rk4", "bayes")
    model = build_model(exp, 0.01, norm, fill, ModelConfig(), (0.01, 1.0), solver=solver)
    ecfg = EvalConfig(batch_size=2)
    ds, _ = evaluate(model, exp, test, norm, 0.01, ecfg, torch.device("cpu"))
    x_std = ds["x_std"]
    assert x_std.dims == ds["x_hat"].dims and x_std.attrs["units"] == "model units"
    assert (x_std.values >= 0).all()
    # by hand: every segment of the bank weighed by its likelihood, E[x^2] - E[x]^2
    seg = bank.unfold(1, 200, 1).reshape(-1, 3, 200)  # (candidates, C, T)
    y = np.nan_to_num(ds["y"].values.transpose(0, 2, 1))
    mask = ds["mask"].values.transpose(0, 2, 1)
    for b in range(len(y)):
        m, yb = torch.as_tensor(mask[b], dtype=torch.float64), torch.as_tensor(y[b])
        rss = (m * (seg - yb) ** 2).sum(dim=(1, 2))
        w = torch.exp(-(rss - rss.min()) / (2 * obs_var))
        w = w / w.sum()
        mean = torch.einsum("n,nct->ct", w, seg)
        var = torch.einsum("n,nct->ct", w, seg**2) - mean**2
        std = var.clamp(min=0).sqrt().numpy().T  # (T, C), as in the file
        np.testing.assert_allclose(ds["x_hat"].values[b], mean.numpy().T, atol=1e-3)
        np.testing.assert_allclose(x_std.values[b], std, rtol=1e-3, atol=1e-3)
    assert x_std.values.max() > 0.1


def test_fig3_more_examples_than_sequences(evals, tmp_path):
    figures.fig3(evals["l63"], tmp_path / "f.pdf", tmp_path / "f.png", n_examples=10)
    _check_outputs(tmp_path / "f.pdf", tmp_path / "f.png")


def test_fig4(evals, tmp_path):
    figures.fig4(evals["l96"], tmp_path / "fig4.pdf", tmp_path / "fig4.png", preset="ci")
    _check_outputs(tmp_path / "fig4.pdf", tmp_path / "fig4.png")


def test_example_indices():
    assert figures.example_indices(2000, 4).tolist() == [0, 666, 1333, 1999]
    assert figures.example_indices(3, 4).tolist() == [0, 1, 2]


def test_missing_file_names_row_and_path(evals, tmp_path):
    missing = tmp_path / "nowhere" / "eval.nc"
    rows = {**evals["l63"], "GENN": missing}
    with pytest.raises(FileNotFoundError, match=r"'GENN'.*nowhere"):
        figures.fig2(rows, tmp_path / "x.pdf", tmp_path / "x.png")
    assert not (tmp_path / "x.pdf").exists()


def test_bad_inputs(evals, tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        figures.fig3({}, tmp_path / "x.pdf", tmp_path / "x.png")
    mixed = {"l63": evals["l63"]["FSGD"], "l96": evals["l96"]["FSGD"]}
    with pytest.raises(ValueError, match="same test split"):
        figures.fig2(mixed, tmp_path / "x.pdf", tmp_path / "x.png")
    with xr.open_dataset(evals["l63"]["FSGD"]) as ds:
        ds.drop_vars("x_hat").to_netcdf(tmp_path / "no_xhat.nc")
    with pytest.raises(ValueError, match=r"no_xhat.nc.*x_hat"):
        figures.fig2({"FSGD": tmp_path / "no_xhat.nc"}, tmp_path / "x.pdf", tmp_path / "x.png")


def test_every_row_has_one_style_of_its_own_in_every_figure():
    """A row's colour and line style come from its name alone (so it is the same in every
    figure), and no two rows of the config's tables share one."""
    import yaml

    from fourdvarnet.figures import _styles, row_style

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    rows = sorted({r for rows in cfg["experiments"].values() for r in rows})
    styles = {r: (row_style(r)["color"], row_style(r)["ls"]) for r in rows}
    assert len(set(styles.values())) == len(rows), styles
    assert styles["none-rk4-fsgd"] == ("m", ":")  # the paper's FSGD: magenta, dotted
    assert styles["supervised-genn-conv"] == ("c", "-")  # the paper's GENN: cyan
    attrs = {"scheme": "none", "prior": "rk4", "solver": "enks"}
    ds = xr.Dataset(attrs=attrs)
    assert _styles({"EnKS": ds, "another label": ds}) == {
        "EnKS": row_style("none-rk4-enks"), "another label": row_style("none-rk4-enks")
    }  # fmt: skip


def test_fig4_fits_a_page_width(evals, tmp_path):
    """Seven rows' maps wrap onto lines of at most four: the figure stays 14 inches wide."""
    from fourdvarnet.figures import FIG4_WIDTH

    many = {f"row {i}": path for i, path in enumerate(list(evals["l96"].values()) * 4)}
    many = dict(list(many.items())[:7])
    figures.fig4(many, tmp_path / "f.pdf", tmp_path / "f.png")
    height, width = mpimg.imread(tmp_path / "f.png").shape[:2]
    assert width <= FIG4_WIDTH * 150 + 2 and height < 2400


def test_a_long_caption_is_wrapped_inside_the_figure():
    """A preset's caption is one long sentence: wrapped, the title stays within the figure."""
    import matplotlib.pyplot as plt

    from fourdvarnet.figures import wrapped

    caption = "quick preset: a few hundred optimiser steps per row on small data, " * 3
    for width in (6, 14):
        fig = plt.figure(figsize=(width, 4))
        title = fig.suptitle("A title\n" + wrapped(fig, caption.strip()), fontsize=13)
        fig.canvas.draw()
        box, frame = title.get_window_extent(), fig.bbox
        plt.close(fig)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (width, box, frame)
    assert "\n" in wrapped(plt.figure(figsize=(6, 4)), caption)
