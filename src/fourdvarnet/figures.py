"""Figures 2-4 of the paper, drawn from the evaluation NetCDF files of the table rows.

Each function takes a mapping ``label -> evaluation file`` (one file per row, as written by
:func:`fourdvarnet.pipeline.evaluate_row`; the labels become the legend entries, in the order
given) and writes the figure as a PDF and a PNG. All rows of one figure must have been evaluated
on the same test split: the truth and the observations are taken from the first file.

Every row has one style in every figure (``row_style``, from the row's name alone), following the
paper where the rows allow it: rows with the Lorenz ODE prior are magenta, GENN rows cyan (the
aG-LSTM solver in a darker shade than aG-Conv); unsupervised rows dashed, supervised rows solid.
The baselines are dotted, each in its own colour (FSGD magenta as in the paper, L-BFGS purple,
EnKS orange); the direct CNN is green and the Bayes posterior mean grey.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import xarray as xr  # noqa: E402

from .data import describe_setup, read_json, read_netcdf, read_torch  # noqa: E402

log = logging.getLogger(__name__)

REQUIRED = ("x", "y", "mask", "x_hat", "pathway_r_score", "pathway_fourdvar_score")
#: Colours of the learned rows per prior and solver (the paper: ODE magenta, GENN cyan).
PRIOR_COLOURS = {
    ("rk4", "conv"): "m", ("rk4", "lstm"): "darkmagenta",
    ("euler", "conv"): "tab:olive", ("euler", "lstm"): "olive",
    ("genn", "conv"): "c", ("genn", "lstm"): "darkcyan",
}  # fmt: skip
#: Colours of the rows whose solver alone names them (the baselines, direct CNN, Bayes floor).
SOLVER_COLOURS = {
    "fsgd": "m", "lbfgs": "tab:purple", "enks": "tab:orange", "fixed_point": "tab:brown",
    "direct": "tab:green", "bayes": "tab:gray",
}  # fmt: skip
SCHEME_STYLES = {"none": ":", "unsupervised": "--", "supervised": "-"}
#: One-pass rows: no solver iterations, so their "pathway" is two points (first guess, result).
#: Figure 4 fits a page's width: at most this many rows' maps side by side, this wide (inches).
MAP_COLUMNS = 4
FIG4_WIDTH = 14.0
ONE_PASS_NOTE = "markers: rows without iterations (first guess and result only)"
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
        for key, what in (("data_setup", "data set-ups"), ("run", "runs")):
            a, b = first.attrs.get(key), ds.attrs.get(key)
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"rows {first_label!r} and {label!r} come from different {what} "
                    f"({a} and {b}): one figure draws one set-up"
                )
    return out


def row_style(row: str) -> dict:
    """The colour and line style of table row ``row`` (scheme-prior-solver), the same in every
    figure; an unknown prior or solver is black."""
    scheme, prior, solver = row.split("-")
    colour = SOLVER_COLOURS.get(solver) if scheme == "none" or prior == "none" else None
    colour = colour or PRIOR_COLOURS.get((prior, solver)) or SOLVER_COLOURS.get(solver, "k")
    return {"color": colour, "ls": "-" if solver == "bayes" else SCHEME_STYLES.get(scheme, "-")}


def _styles(dsets: Mapping[str, xr.Dataset]) -> dict[str, dict]:
    """Each drawn row's style, from the row its evaluation file names (``row_style``)."""
    return {label: row_style(_row(ds)) for label, ds in dsets.items()}


def _row(ds: xr.Dataset) -> str:
    return "-".join(str(ds.attrs.get(k, "none")) for k in ("scheme", "prior", "solver"))


def wrapped(fig, caption: str, fontsize: float = 13) -> str:
    """``caption`` broken into lines that fit the width of ``fig`` (a title's caption is one
    long sentence; matplotlib does not wrap it and would cut it at the figure's edges)."""
    per_line = max(int(fig.get_figwidth() * 72 / (0.6 * fontsize)), 20)
    return textwrap.fill(caption, per_line)


def _title(fig, text: str, preset: str, dsets: Mapping[str, xr.Dataset], caption="") -> None:
    """The figure's title, with the preset, the run, the seeds and the data set-up, and the
    preset's ``caption`` (what its numbers are not) on a line of its own."""
    ds = next(iter(dsets.values()))
    seeds = sorted({str(d.attrs.get("seed", "?")) for d in dsets.values()})
    extra = f"{ds.sizes['sample']} test sequences, seed {', '.join(seeds)}"
    run = ds.attrs.get("run")
    where = f"{f'preset {preset}, ' if preset else ''}{f'run {run}, ' if run else ''}"
    lines = [f"{text} ({where}{extra})"]
    if "data_setup" in ds.attrs:
        lines.append(describe_setup(json.loads(ds.attrs["data_setup"])))
    if caption:
        lines.append(wrapped(fig, caption))
    fig.suptitle("\n".join(lines), fontsize=13)


def _save(fig, out_pdf, out_png) -> None:
    for path in (out_pdf, out_png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_pdf, metadata={"CreationDate": None})
    fig.savefig(out_png, dpi=150)
    plt.close(fig)
    log.info("wrote %s and %s", out_pdf, out_png)


def _pathway(ax, dsets, styles, var: str, ylabel: str) -> None:
    """One energy pathway per row against iteration + 1 (iteration 0: interpolated state)."""
    one_pass = False
    for label, ds in dsets.items():
        it = ds["iteration"].values
        marker = "o" if len(it) <= 2 else None  # one-pass methods: first guess and result
        one_pass |= marker is not None
        ax.plot(it + 1, ds[var].values, label=label, lw=1.8, marker=marker, **styles[label])
    if one_pass:
        ax.text(0.01, 0.01, ONE_PASS_NOTE, transform=ax.transAxes, fontsize=7, color="0.3")
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


def fig2(
    evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "", caption: str = ""
) -> None:
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
    _title(fig, "Figure 2 – Lorenz-63: energy pathways and error pdfs", preset, dsets, caption)
    _save(fig, out_pdf, out_png)


def example_indices(n_samples: int, n_examples: int) -> np.ndarray:
    """``n_examples`` evenly spaced test-sequence indices (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_samples - 1, min(n_examples, n_samples)).round().astype(int))


def fig3(
    evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "", n_examples=4, caption=""
):
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
    _title(fig, "Figure 3 – Lorenz-63 reconstruction examples", preset, dsets, caption)
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


def fig4(
    evals: Mapping[str, str | Path], out_pdf, out_png, preset: str = "", caption: str = ""
) -> None:
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
    ncols = min(MAP_COLUMNS, len(dsets))
    blocks = math.ceil(len(dsets) / ncols)  # rows of (reconstruction, error) map pairs
    fig = plt.figure(figsize=(FIG4_WIDTH, 4.2 + 3.6 * blocks), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.2, 3.6 * blocks])
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
    _reconstruction_maps(bottom, dsets, errors, s, t[half], half, state_kw, err_kw, ncols)
    _title(fig, "Figure 4 – Lorenz-96", preset, dsets, caption)
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


def _reconstruction_maps(subfig, dsets, errors, s, t_half, half, state_kw, err_kw, ncols) -> None:
    """Hovmoeller maps of each row's reconstruction of the slice ``half`` (times ``t_half``) of
    test sequence ``s`` and, below it, of its absolute error ``errors[row]``: ``ncols`` rows
    side by side, the next ones in a further pair of lines."""
    n_comp = next(iter(dsets.values())).sizes["component"]
    blocks = math.ceil(len(dsets) / ncols)
    axes = subfig.subplots(2 * blocks, ncols, sharex=True, sharey=True, squeeze=False)
    for j, (label, ds) in enumerate(dsets.items()):
        ax_s, ax_e = axes[2 * (j // ncols), j % ncols], axes[2 * (j // ncols) + 1, j % ncols]
        im_s = _hovmoeller(ax_s, ds["x_hat"].values[s][half], t_half, **state_kw)
        im_e = _hovmoeller(ax_e, errors[label], t_half, **err_kw)
        ax_s.set_title(label, fontsize=9)
        ax_e.set_title("absolute error", fontsize=8)
    for j in range(len(dsets), blocks * ncols):  # empty cells of the last pair of lines
        axes[2 * (j // ncols), j % ncols].axis("off")
        axes[2 * (j // ncols) + 1, j % ncols].axis("off")
    for ax in axes[-1, :]:
        ax.set_xlabel(TIME_LABEL)
    for b in range(blocks):
        axes[2 * b, 0].set_ylabel(f"component (1–{n_comp})")
        axes[2 * b + 1, 0].set_ylabel(f"component (1–{n_comp})")
    subfig.colorbar(im_s, ax=axes[0::2, :].ravel().tolist(), label="state (model units)")
    subfig.colorbar(im_e, ax=axes[1::2, :].ravel().tolist(), label="|error| (model units)")
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
    caption: str = "",
) -> None:
    """Training curves: each learned row's validation R-score against optimiser steps and
    against training seconds (log axes), its paper test R-score as a dotted line in its colour,
    and the test R-scores of the reference rows (``references``: label -> scores JSON, e.g. the
    EnKS and the Bayes floor) as horizontal lines in their rows' styles. ``checkpoints``: row ->
    checkpoint. A ``caption`` (a preset whose training is not comparable with the paper's) goes
    under the title, and the paper's values are then left out: they are no target there."""
    if caption:
        paper = {}

    if not checkpoints:
        raise ValueError("no checkpoint given: the training figure needs a learned row")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True, constrained_layout=True)
    for row, path in checkpoints.items():
        ckpt = read_torch(path, f"checkpoint {path}", "the workflow's `train` rule")
        var = ckpt["normalizer"]["std"] ** 2
        steps, seconds, val_r = _curve(ckpt["train_record"])
        style = row_style(row)
        for ax, x in zip(axes, (steps, seconds)):
            ax.plot(x, val_r * var, marker="o", ms=3, lw=1.6, label=row, **style)
            if not math.isnan(paper.get(row, math.nan)):
                ax.axhline(paper[row], color=style["color"], ls=(0, (1, 3)), lw=1)
    for label, path in references.items():
        rec = read_json(path, f"score file {path}", "the workflow's `evaluate` rule")
        style = row_style(f"{rec['scheme']}-{rec['prior']}-{rec['solver']}")
        for ax in axes:
            ax.axhline(rec["r_score"], lw=1.4, label=f"{label} (test)", **style)
    for ax, xlabel in zip(axes, ("optimiser steps", "training seconds (pre-training excluded)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    paper_note = " (fine dots: the paper's test value)" if paper else ""
    axes[0].set_ylabel(f"validation R-score{paper_note}")
    axes[1].legend(fontsize=8, loc="upper right")
    title = "Training curves" + (f" (preset {preset}, first seed)" if preset else "")
    fig.suptitle(title + (f"\n{wrapped(fig, caption)}" if caption else ""), fontsize=13)
    _save(fig, out_pdf, out_png)
