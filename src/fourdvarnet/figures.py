"""Figures 2-4 of the paper, drawn from the evaluation NetCDF files of the table rows.

Each function takes a mapping ``label -> evaluation file`` (one file per row, as written by
:func:`fourdvarnet.pipeline.evaluate_row`; the labels become the legend entries, in the order
given) and writes the figure as a PDF and a PNG. All rows of one figure must have been evaluated
on the same test split: the truth and the observations are taken from the first file.

Line styles follow the paper where the rows allow it: rows using the Lorenz ODE prior are magenta,
GENN rows cyan; FSGD is dotted, unsupervised rows dashed, supervised rows solid. Rows beyond the
paper have their own colours: the direct CNN green, the Bayes posterior mean grey. Rows that would
share a style fall back to the tab10 colour cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import xarray as xr  # noqa: E402

from .data import read_json, read_netcdf, read_torch  # noqa: E402

log = logging.getLogger(__name__)

REQUIRED = ("x", "y", "mask", "x_hat", "pathway_r_score", "pathway_fourdvar_score")
PRIOR_COLOURS = {"rk4": "m", "euler": "tab:orange", "genn": "c"}
SOLVER_COLOURS = {"direct": "tab:green", "bayes": "tab:gray"}  # before the prior's colour
SCHEME_STYLES = {"none": ":", "unsupervised": "--", "supervised": "-"}
TIME_LABEL = "time (model time units)"
ITER_LABEL = "solver iteration + 1 (log scale)"
MAX_KDE_POINTS = 50_000  # errors per curve fed to the kernel density (a fixed stride, no RNG)


def load_evals(evals: Mapping[str, str | Path]) -> dict[str, xr.Dataset]:
    """Open every evaluation file (into memory) and check it holds what the figures need."""
    if not evals:
        raise ValueError("no evaluation file given: the figure needs at least one labelled row")
    out = {}
    for label, path in evals.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation file for row {label!r} not found: {path}")
        ds = read_netcdf(path, f"{path} (row {label!r})", "the workflow's `evaluate` rule")
        missing = [v for v in REQUIRED if v not in ds]
        if missing:
            raise ValueError(f"{path} (row {label!r}) lacks variable(s) {missing}")
        out[label] = ds
    first_label, first = next(iter(out.items()))
    for label, ds in out.items():
        if ds["x"].shape != first["x"].shape or not np.allclose(ds["x"], first["x"]):
            raise ValueError(
                f"rows {first_label!r} and {label!r} were not evaluated on the same test split"
            )
    return out


def _styles(dsets: Mapping[str, xr.Dataset]) -> dict[str, dict]:
    """Colour and line style of each row, from its prior and learning scheme."""
    styles, used = {}, set()
    fallback = iter(plt.get_cmap("tab10").colors)
    for label, ds in dsets.items():
        colour = SOLVER_COLOURS.get(
            ds.attrs.get("solver"), PRIOR_COLOURS.get(ds.attrs.get("prior"), "k")
        )
        ls = SCHEME_STYLES.get(ds.attrs.get("scheme"), "-")
        if (colour, ls) in used:
            colour = next(fallback)
        used.add((colour, ls))
        styles[label] = {"color": colour, "ls": ls}
    return styles


def _title(fig, text: str, preset: str, dsets: Mapping[str, xr.Dataset]) -> None:
    ds = next(iter(dsets.values()))
    seeds = sorted({str(d.attrs.get("seed", "?")) for d in dsets.values()})
    extra = f"{ds.sizes['sample']} test sequences, seed {', '.join(seeds)}"
    fig.suptitle(f"{text} ({f'preset {preset}, ' if preset else ''}{extra})", fontsize=13)


def _save(fig, out_pdf, out_png) -> None:
    for path in (out_pdf, out_png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_pdf, metadata={"CreationDate": None})
    fig.savefig(out_png, dpi=150)
    plt.close(fig)
    log.info("wrote %s and %s", out_pdf, out_png)


def _pathway(ax, dsets, styles, var: str, ylabel: str) -> None:
    """One energy pathway per row against iteration + 1 (iteration 0: interpolated state)."""
    for label, ds in dsets.items():
        it = ds["iteration"].values
        marker = "o" if len(it) <= 2 else None  # one-pass methods: first guess and result
        ax.plot(it + 1, ds[var].values, label=label, lw=1.8, marker=marker, **styles[label])
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()  # on a narrow range, label (some) minor ticks too, plainly
    digits = "23456789" if hi / lo <= 10 else ("235" if hi / lo < 100 else "")
    ax.yaxis.set_minor_formatter(
        mticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in digits else "")
    )
    ax.set_xlabel(ITER_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _error_pdf(ax, dsets, styles, component=None) -> None:
    """Kernel density of the reconstruction error ``x_hat - x`` (one component, or all)."""
    errs = {}
    for label, ds in dsets.items():
        e = ds["x_hat"] - ds["x"]
        e = e.sel(component=component) if component is not None else e
        e = e.values.ravel()
        errs[label] = e[:: max(1, e.size // MAX_KDE_POINTS)]
    pooled = np.concatenate(list(errs.values()))
    lo, hi = np.percentile(pooled, [0.5, 99.5])
    half = max(abs(lo), abs(hi), 1e-6)
    for label, e in errs.items():
        if np.ptp(e) > 0:
            sns.kdeplot(
                x=e, ax=ax, label=label, lw=1.8, cut=0, clip=(-3 * half, 3 * half), **styles[label]
            )
        else:  # a perfect (or constant) reconstruction has no density to estimate
            ax.axvline(e[0], label=label, **styles[label])
    ax.set_xlim(-half, half)
    ax.set_ylabel("probability density")
    ax.grid(True, alpha=0.3)


def fig2(evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "") -> None:
    """Figure 2 (Lorenz-63): energy pathways (top) and reconstruction-error pdfs (bottom).

    Top left: R-score (mean squared error of the reconstruction, in squared model units) after
    each recorded solver iteration; top right: the 4DVar-score (variational cost with the true
    ODE prior). Both on log axes, against iteration + 1 so that iteration 0 (the interpolated
    initial state) is shown. Bottom: pdf of ``x_hat - x`` for each state component, pooled over
    test sequences and time steps. Expected rows (any labels): FSGD, unsupervised RK4, supervised
    RK4, supervised GENN.
    """
    dsets = load_evals(evals)
    styles = _styles(dsets)
    n_comp = next(iter(dsets.values())).sizes["component"]
    fig = plt.figure(figsize=(4.2 * n_comp, 8.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    ax_r, ax_u = top.subplots(1, 2)
    _pathway(ax_r, dsets, styles, "pathway_r_score", "R-score (MSE, model units²)")
    ax_r.set_title("reconstruction error along the solver iterations")
    _pathway(ax_u, dsets, styles, "pathway_fourdvar_score", "4DVar-score (variational cost)")
    ax_u.set_title("variational cost along the solver iterations")
    axes = np.atleast_1d(bottom.subplots(1, n_comp))
    for c, ax in enumerate(axes):
        _error_pdf(ax, dsets, styles, component=c)
        ax.set_xlabel(f"error on $x_{c + 1}$ (model units)")
        ax.set_title(f"component $x_{c + 1}$")
    fig.legend(*ax_r.get_legend_handles_labels(), loc="outside lower center", ncol=len(dsets))
    _title(fig, "Figure 2 – Lorenz-63: energy pathways and error pdfs", preset, dsets)
    _save(fig, out_pdf, out_png)


def example_indices(n_samples: int, n_examples: int) -> np.ndarray:
    """``n_examples`` evenly spaced test-sequence indices (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_samples - 1, min(n_examples, n_samples)).round().astype(int))


def fig3(evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "", n_examples=4):
    """Figure 3 (Lorenz-63): reconstructions of ``n_examples`` test sequences.

    One column per sequence (evenly spaced sample indices), one row per component: truth (black),
    noisy observations where observed (blue dots; only x1 in the paper's set-up) and the
    reconstruction of each given row (e.g. 'RK4 + learned solver' magenta, 'GENN + learned
    solver' cyan). A row whose file holds ``x_std`` (the Bayes posterior mean) is drawn with a
    band of plus/minus two posterior standard deviations. Returns the (closed) figure.
    """
    dsets = load_evals(evals)
    styles = _styles(dsets)
    ref = next(iter(dsets.values()))
    idx = example_indices(ref.sizes["sample"], n_examples)
    n_comp = ref.sizes["component"]
    t = ref["time"].values
    fig, axes = plt.subplots(
        n_comp,
        len(idx),
        figsize=(3.8 * len(idx), 2.4 * n_comp + 0.8),
        squeeze=False,
        sharex=True,
        sharey="row",
        layout="constrained",
    )
    for j, s in enumerate(idx):
        for c in range(n_comp):
            ax = axes[c, j]
            _draw_example(ax, t, ref, dsets, styles, s, c)
            if j == 0:
                ax.set_ylabel(f"$x_{c + 1}$ (model units)")
            if c == 0:
                ax.set_title(f"test sequence {s}")
            if c == n_comp - 1:
                ax.set_xlabel(TIME_LABEL)
    _examples_legend(fig, axes, dsets)
    _title(fig, "Figure 3 – Lorenz-63 reconstruction examples", preset, dsets)
    _save(fig, out_pdf, out_png)
    return fig


def _draw_example(ax, t, ref, dsets, styles, s, c) -> None:
    """Component ``c`` of test sequence ``s``: the truth, each row's reconstruction (with its
    band of plus/minus two posterior standard deviations when the file holds ``x_std``) and
    the noisy observations on top."""
    ax.plot(t, ref["x"].values[s, :, c], "k-", lw=1.6, label="truth")
    for label, ds in dsets.items():
        mean = ds["x_hat"].values[s, :, c]
        if "x_std" in ds:
            band = 2 * ds["x_std"].values[s, :, c]
            ax.fill_between(
                t,
                mean - band,
                mean + band,
                color=styles[label]["color"],
                alpha=0.25,
                lw=0,
                label=f"{label} ± 2 std",
            )
        ax.plot(t, mean, lw=1.4, label=label, **styles[label])
    obs = ref["mask"].values[s, :, c] > 0
    if obs.any():  # on top of the curves
        ax.plot(
            t[obs],
            ref["y"].values[s, obs, c],
            "o",
            color="tab:blue",
            ms=4,
            mec="white",
            mew=0.5,
            zorder=5,
            label="noisy observations",
        )
    ax.grid(True, alpha=0.3)


def _examples_legend(fig, axes, dsets) -> None:
    """One legend of every panel's entries: truth and observations first, then the rows."""
    entries = {}
    for ax in axes.flat:
        entries.update(zip(*ax.get_legend_handles_labels()[::-1], strict=True))
    order = ["truth", "noisy observations", *dsets, *(f"{k} ± 2 std" for k in dsets)]
    labels = [k for k in order if k in entries]
    fig.legend([entries[k] for k in labels], labels, loc="outside lower center", ncol=len(labels))


def _hovmoeller(ax, field, t, **kw):
    """Map of ``field`` (time, component): time on x, component index on y (1-based, as x_k)."""
    n_comp = field.shape[1]
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    extent = (t[0] - dt / 2, t[-1] + dt / 2, 0.5, n_comp + 0.5)
    return ax.imshow(
        field.T, origin="lower", aspect="auto", extent=extent, interpolation="nearest", **kw
    )


def fig4(evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "") -> None:
    """Figure 4 (Lorenz-96): example sequence, energy pathways, error pdfs and Hovmoeller maps.

    Upper left: the true state of one test sequence (the middle one) and its noisy observations
    (white where unobserved), component against time. Upper centre: R-score pathways against
    iteration + 1 (log axes). Upper right: pdfs of ``x_hat - x`` over all components. Lower: the
    first half of that sequence as reconstructed by each row, then the absolute error maps; all
    states share one colour scale (the truth's) and all errors another. Expected rows (any
    labels): FSGD, unsupervised RK4, supervised RK4, supervised GENN.
    """
    dsets = load_evals(evals)
    styles = _styles(dsets)
    ref = next(iter(dsets.values()))
    s = ref.sizes["sample"] // 2
    t = ref["time"].values
    truth = ref["x"].values[s]
    half = slice(0, max(1, len(t) // 2))
    state_kw = {"cmap": "viridis", "vmin": np.nanmin(truth), "vmax": np.nanmax(truth)}
    errors = {k: np.abs(ds["x_hat"].values[s] - truth)[half] for k, ds in dsets.items()}
    err_max = max(max(e.max() for e in errors.values()), 1e-6)
    err_kw = {"cmap": "magma", "vmin": 0.0, "vmax": err_max}
    fig = plt.figure(figsize=(max(15, 3.9 * len(dsets) + 1), 10.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    left, centre, right = top.subfigures(1, 3, width_ratios=[1.25, 1, 1])
    _truth_and_observations(left, ref, s, half, state_kw)
    ax_r = centre.subplots()
    _pathway(ax_r, dsets, styles, "pathway_r_score", "R-score (MSE, model units²)")
    ax_r.set_title("energy pathways")
    ax_r.legend(fontsize=8, title="rows (also in the error pdfs)", title_fontsize=8)
    ax_e = right.subplots()
    _error_pdf(ax_e, dsets, styles)
    ax_e.set_xlabel("reconstruction error, all components (model units)")
    ax_e.set_title("error pdfs")
    _reconstruction_maps(bottom, dsets, errors, s, t[half], half, state_kw, err_kw)
    _title(fig, "Figure 4 – Lorenz-96", preset, dsets)
    _save(fig, out_pdf, out_png)


def _truth_and_observations(subfig, ref, s, half, state_kw) -> None:
    """Hovmoeller maps of the true state of test sequence ``s`` (the end of the slice ``half``
    marked) and of its noisy observations (white where unobserved), with a colour bar."""
    t = ref["time"].values
    n_comp = ref.sizes["component"]
    obs = np.where(ref["mask"].values[s] > 0, ref["y"].values[s], np.nan)
    ax_x, ax_y = subfig.subplots(2, 1, sharex=True)
    im = _hovmoeller(ax_x, ref["x"].values[s], t, **state_kw)
    _hovmoeller(ax_y, obs, t, **state_kw)
    t_half = t[half][-1] + (t[1] - t[0] if len(t) > 1 else 0) / 2  # edge of the last column
    ax_x.axvline(t_half, color="w", ls="--", lw=1.2)
    ax_x.text(t_half, n_comp, "first half ◂ ", color="w", ha="right", va="top", fontsize=8)
    ax_x.set_title(f"true state, test sequence {s}")
    ax_y.set_title("noisy observations (white: not observed)")
    for ax in (ax_x, ax_y):
        ax.set_ylabel(f"component (1–{n_comp})")
    ax_y.set_xlabel(TIME_LABEL)
    subfig.colorbar(im, ax=[ax_x, ax_y], label="state (model units)")


def _reconstruction_maps(subfig, dsets, errors, s, t_half, half, state_kw, err_kw) -> None:
    """Hovmoeller maps of each row's reconstruction of the slice ``half`` (times ``t_half``) of
    test sequence ``s`` (top) and of its absolute error ``errors[row]`` (bottom)."""
    n_comp = next(iter(dsets.values())).sizes["component"]
    axes = subfig.subplots(2, len(dsets), sharex=True, sharey=True, squeeze=False)
    for j, (label, ds) in enumerate(dsets.items()):
        im_s = _hovmoeller(axes[0, j], ds["x_hat"].values[s][half], t_half, **state_kw)
        im_e = _hovmoeller(axes[1, j], errors[label], t_half, **err_kw)
        axes[0, j].set_title(label, fontsize=10)
        axes[1, j].set_xlabel(TIME_LABEL)
    axes[0, 0].set_ylabel(f"component (1–{n_comp})\nreconstruction")
    axes[1, 0].set_ylabel(f"component (1–{n_comp})\nabsolute error")
    subfig.colorbar(im_s, ax=axes[0, :], label="state (model units)")
    subfig.colorbar(im_e, ax=axes[1, :], label="|error| (model units)")
    subfig.suptitle(f"first half of test sequence {s}: reconstructions and absolute errors")


def _curve(record: dict):
    """A training record's optimiser steps, training seconds (cumulative, pre-training excluded)
    and validation R-scores (normalised units) per epoch."""
    hist = record["history"]
    steps = np.array([h["steps"] for h in hist])
    return steps, np.cumsum([h["seconds"] for h in hist]), np.array([h["val_r"] for h in hist])


def fig_training(
    checkpoints: Mapping[str, str | Path],
    references: Mapping[str, str | Path],
    paper: Mapping[str, float],
    out_pdf,
    out_png,
    preset: str = "",
) -> None:
    """Training curves: each learned row's validation R-score against optimiser steps and
    against training seconds (log axes), its paper test R-score as a dashed line in its colour,
    and the test R-scores of the reference rows (``references``: label -> scores JSON, e.g. the
    EnKS and the Bayes floor) as grey horizontal lines. ``checkpoints``: row -> checkpoint."""

    if not checkpoints:
        raise ValueError("no checkpoint given: the training figure needs a learned row")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True, constrained_layout=True)
    colours = iter(plt.get_cmap("tab10").colors)
    for row, path in checkpoints.items():
        ckpt = read_torch(path, f"checkpoint {path}", "the workflow's `train` rule")
        var = ckpt["normalizer"]["std"] ** 2
        steps, seconds, val_r = _curve(ckpt["train_record"])
        colour = next(colours)
        for ax, x in zip(axes, (steps, seconds)):
            ax.plot(x, val_r * var, marker="o", ms=3, lw=1.6, color=colour, label=row)
            if not math.isnan(paper.get(row, math.nan)):
                ax.axhline(paper[row], color=colour, ls="--", lw=1)
    for (label, path), ls in zip(references.items(), (":", "-.", "-")):
        score = read_json(path, f"score file {path}", "the workflow's `evaluate` rule")["r_score"]
        for ax in axes:
            ax.axhline(score, color="0.4", ls=ls, lw=1.4, label=f"{label} (test)")
    for ax, xlabel in zip(axes, ("optimiser steps", "training seconds (pre-training excluded)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("validation R-score (dashed: the paper's test value)")
    axes[1].legend(fontsize=8, loc="upper right")
    title = "Training curves" + (f" (preset {preset}, first seed)" if preset else "")
    fig.suptitle(title, fontsize=13)
    _save(fig, out_pdf, out_png)
