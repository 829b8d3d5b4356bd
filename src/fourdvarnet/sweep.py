"""The observation sweep: R-score against the observation set-up, one evaluation per point.

A sweep (config ``sweep``: a system, lists of observation spacings ``every`` and noise variances
``noise_var``, and the rows to score) runs the whole twin experiment again at every point of the
grid: its own data, training and evaluation (the workflow's
``results/<...>/sweep/every<E>-noise<V>/``). Here the points' score files become one CSV (the
R-score with its 95% moving-block interval per row and point) and one figure: R-score against
the spacing, a panel per noise variance, a line per row in its style of every figure, and the
paper's set-up marked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import intervals  # noqa: E402
from .data import read_json  # noqa: E402
from .figures import _save, row_style, wrapped  # noqa: E402
from .tables import row_label  # noqa: E402

#: The paper's observation set-up of each system (spacing in steps, noise variance).
PAPER_OBS = {"l63": (8, 2.0), "l96": (4, 2.0)}


def sweep_table(score_files: Iterable[str | Path], system: str) -> pd.DataFrame:
    """One line per row and point: its observation spacing and noise variance (read from the
    score file's data set-up), R-score and 95% moving-block interval (``intervals``)."""
    out = []
    for f in score_files:
        rec = read_json(f, f"score file {f}", "the workflow's `evaluate` rule")
        if rec.get("system") != system or "setup" not in rec:
            raise ValueError(f"score file {f}: not a {system} evaluation with its data set-up")
        setup = rec["setup"]
        row = f"{rec['scheme']}-{rec['prior']}-{rec['solver']}"
        lo = hi = math.nan
        if "window_r_score" in rec:
            length = intervals.block_length(np.asarray(rec["window_start"]), rec["window"])
            order = np.argsort(rec["window_start"], kind="stable")
            lo, hi = intervals.interval(np.asarray(rec["window_r_score"])[order], length)
        out.append({
            "system": system, "row": row, "label": row_label(row), "seed": rec["seed"],
            "obs_every": setup["obs_every"], "noise_var": setup["noise_var"],
            "r_score": rec["r_score"], "r_score_ci_low": lo, "r_score_ci_high": hi,
            "run": rec.get("run", ""),
        })  # fmt: skip
    if not out:
        raise ValueError("no score files given")
    table = pd.DataFrame(out).sort_values(["row", "noise_var", "obs_every"], kind="stable")
    dup = table.duplicated(["row", "obs_every", "noise_var", "seed"])
    if dup.any():
        raise ValueError(f"two score files for one row and point: {table[dup].iloc[0].to_dict()}")
    return table.reset_index(drop=True)


def fig_sweep(table: pd.DataFrame, out_pdf, out_png, preset: str = "", caption: str = "") -> None:
    """R-score (log) against the observation spacing (log 2), one panel per noise variance, a
    line per row with its interval as error bars; the paper's set-up marked."""
    system = str(table["system"].iloc[0])
    noises = sorted(table["noise_var"].unique())
    fig, axes = plt.subplots(
        1, len(noises), figsize=(4.6 * len(noises) + 1, 4.6), sharey=True, squeeze=False,
        layout="constrained",
    )  # fmt: skip
    paper_every, paper_noise = PAPER_OBS.get(system, (None, None))
    for ax, noise in zip(axes[0], noises):
        at = table[table["noise_var"] == noise]
        for row, line in at.groupby("row", sort=False):
            line = line.sort_values("obs_every")
            err = np.vstack([line["r_score"] - line["r_score_ci_low"],
                             line["r_score_ci_high"] - line["r_score"]])  # fmt: skip
            ax.errorbar(
                line["obs_every"], line["r_score"], yerr=np.nan_to_num(err), marker="o", ms=4,
                lw=1.6, capsize=3, label=line["label"].iloc[0], **row_style(row),
            )  # fmt: skip
        if paper_every is not None and math.isclose(noise, paper_noise):
            ax.axvline(paper_every, color="0.5", ls="--", lw=1)
            ax.text(paper_every, 0.98, " the paper's set-up", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8, color="0.3")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted(table["obs_every"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("observation spacing (model steps)")
        ax.set_title(f"noise variance {noise:g}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("test R-score (95% interval)")
    axes[0, -1].legend(fontsize=8)
    run = table["run"].iloc[0]
    where = ", ".join(
        x for x in (f"preset {preset}" if preset else "", f"run {run}" if run else "") if x
    )
    title = f"{system.upper()}: R-score against the observation set-up" + (
        f" ({where})" if where else ""
    )
    fig.suptitle(title + (f"\n{wrapped(fig, caption, 12)}" if caption else ""), fontsize=12)
    _save(fig, out_pdf, out_png)


def write_sweep(score_files, system: str, out_csv, out_pdf, out_png, preset="", caption=""):
    """The sweep's CSV and figure from its points' score files."""
    table = sweep_table(score_files, system)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False, float_format="%.4g")
    fig_sweep(table, out_pdf, out_png, preset=preset, caption=caption)
    return table
