"""Tables 1-2: our scores (mean and standard deviation over seeds) beside the paper's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import intervals
from .data import describe_setup, read_json

#: The paper's Tables 1 (Lorenz-63) and 2 (Lorenz-96), preprint of July 2020:
#: row -> (R-score, 4DVar-score, ODE-score as printed). NaN where the paper gives no number.
PAPER = {
    "l63": {
        "none-rk4-fsgd": (3.55, 7.70e-3, "<1e-4"),
        "unsupervised-rk4-conv": (3.52, 1.07e-2, "<1e-4"),
        "unsupervised-rk4-lstm": (4.52, 1.40e-2, "<1e-4"),
        "unsupervised-genn-conv": (7.05, 29.85, "2.0e-4"),
        "unsupervised-genn-lstm": (math.nan, math.nan, "2.0e-4"),
        "supervised-rk4-conv": (2.82, 9.24e-2, "<1e-4"),
        "supervised-rk4-lstm": (4.00, 9.36e-2, "<1e-4"),
        "supervised-genn-conv": (1.34, 1.10e-1, "0.16"),
        "supervised-genn-lstm": (1.62, 1.27e-1, "0.14"),
    },
    "l96": {
        "none-rk4-fsgd": (1.06, 1.47e-2, "<1e-4"),
        "unsupervised-rk4-conv": (1.00, 1.66e-2, "<1e-4"),
        "unsupervised-rk4-lstm": (1.32, 1.91e-2, "<1e-4"),
        "supervised-rk4-conv": (0.82, 2.12e-2, "<1e-4"),
        "supervised-rk4-lstm": (0.97, 3.15e-2, "<1e-4"),
        "supervised-genn-conv": (0.49, 7.47e-2, "0.122"),
        "supervised-genn-lstm": (0.38, 5.30e-2, "0.072"),
    },
}

#: Score columns: the 4DVar-score with the true RK4 prior (comparable across rows) and with the
#: row's own prior (``_own``; the paper's unsupervised GENN value suggests it used this one).
SCORES = (
    "r_score",
    "fourdvar_score",
    "fourdvar_score_own",
    "ode_score",
    "r_score_observed",
    "r_score_unobserved",
    "roughness",
)


#: Rows beyond the paper, placed after its FSGD row: classic data-assimilation baselines.
BASELINES = ("none-rk4-lbfgs", "none-rk4-enks")

#: Direct learning, x_hat = CNN(y) (no prior, no solver): after the paper's supervised rows.
#: It has no prior, so no ``fourdvar_score_own`` nor ``ode_score`` (empty cells).
DIRECT = "supervised-none-direct"

#: The Bayes floor (L63): the exact posterior mean, the lowest R-score any method can reach on
#: average; last in the table, and the ``ratio`` column divides every row's R-score by it.
FLOOR = "none-rk4-bayes"

#: Per-window fields of a score file (``pipeline.evaluate_row``): the intervals' input.
WINDOW_FIELDS = ("window_r_score", "window_start", "window")

#: Cost columns: wall time of the row's evaluation and, for learned rows, of its training.
SECONDS = ("seconds", "train_seconds")


#: Names of the table rows' parts as the figures and the paper write them.
PRIOR_NAMES = {"rk4": "RK4", "euler": "Euler", "genn": "GENN"}
SOLVER_NAMES = {
    "fsgd": "FSGD",
    "lbfgs": "L-BFGS 4D-Var",
    "enks": "EnKS",
    "bayes": "Bayes posterior mean",
    "fixed_point": "fixed point",
    "conv": "aG-Conv",
    "lstm": "aG-LSTM",
    "direct": "direct CNN (U-Net)",
}


def row_label(row: str) -> str:
    """A reader's name of a row: ``supervised-genn-conv`` -> ``supervised GENN + aG-Conv``,
    ``none-rk4-enks`` -> ``EnKS`` (a baseline's prior named only when it is not RK4)."""
    scheme, prior, solver = row.split("-")
    name = SOLVER_NAMES.get(solver, solver)
    if scheme == "none":
        return name if prior == "rk4" else f"{name} ({PRIOR_NAMES.get(prior, prior)})"
    if prior == "none":
        return f"{scheme} {name}"
    return f"{scheme} {PRIOR_NAMES.get(prior, prior)} + {name}"


def paper_ode(printed: str) -> tuple[float, str]:
    """The paper's ODE-score as a number, and a note where it printed a bound (``<1e-4``:
    NaN and the note ``<1e-4``)."""
    if not printed:
        return math.nan, ""
    try:
        return float(printed), ""
    except ValueError:
        return math.nan, printed


def row_order(system: str) -> list[str]:
    """The paper's rows of ``system`` in its order, the classic baselines after its FSGD row,
    then the direct CNN and the Bayes floor."""
    rows = list(PAPER.get(system, {}))
    at = rows.index("none-rk4-fsgd") + 1 if "none-rk4-fsgd" in rows else 0
    return rows[:at] + list(BASELINES) + rows[at:] + [DIRECT, FLOOR]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_scores(score_files: list[str | Path], system: str) -> list[dict]:
    """The score files of one table, checked: valid JSON, finite scores, all of ``system``."""
    recs = []
    for f in score_files:
        rec = read_json(f, f"score file {f}", "the workflow's `evaluate` rule")
        bad = {k: rec.get(k) for k in (*SCORES, "val_r_score") if k in rec}
        bad = {k: v for k, v in bad.items() if not _finite(v)}
        if bad:
            raise ValueError(f"score file {f}: non-finite score(s) {bad}; it cannot go in a table")
        rec["row"] = f"{rec['scheme']}-{rec['prior']}-{rec['solver']}"
        recs.append(rec)
    if not recs:
        raise ValueError("no score files given")
    wrong = sorted({r["system"] for r in recs} - {system})
    if wrong:
        raise ValueError(f"score files of system(s) {wrong} given for the {system} table")
    for key, what in (("setup", "data set-ups"), ("run", "runs"), ("preset", "presets")):
        _same(recs, score_files, key, what)
    return recs


def _same(recs: list[dict], files, key: str, what: str) -> None:
    """Refuse score files that differ in ``key`` (the data set-up, the named run): their rows
    cannot share a table. Files written before the key existed are not checked."""
    seen: dict[str, str] = {}
    for rec, f in zip(recs, files):
        if key in rec:
            seen.setdefault(json.dumps(rec[key], sort_keys=True), str(f))
    if len(seen) > 1:
        shown = "; ".join(f"{f}: {v}" for v, f in seen.items())
        raise ValueError(f"score files of different {what} cannot share a table: {shown}")


def window_errors(recs: list[dict]) -> tuple[dict[str, np.ndarray], int]:
    """Per row, its per-window R-scores ``(seeds, windows)`` in the order of the windows'
    starts, and the moving-block length; rows whose files lack them are left out. Refuses rows
    scored on different windows (another test split)."""
    rows: dict[str, list] = {}
    starts, length = None, 1
    for rec in recs:
        if "window_r_score" not in rec or "window_start" not in rec:
            continue
        start = np.asarray(rec["window_start"])
        if starts is None:
            starts = start
            length = intervals.block_length(start, int(rec["window"]))
        elif not np.array_equal(start, starts):
            raise ValueError(
                f"{rec['row']} seed {rec['seed']} was scored on other test windows than the rest "
                "of the table: every evaluation of a table must use the same test split"
            )
        rows.setdefault(rec["row"], []).append(np.asarray(rec["window_r_score"], dtype=float))
    if starts is None:
        return {}, length
    order = np.argsort(starts, kind="stable")
    return {r: np.stack(e)[:, order] for r, e in rows.items()}, length


def make_table(score_files: list[str | Path], system: str) -> pd.DataFrame:
    """One line per row (scheme-prior-solver): mean and std over seeds (empty for one seed),
    the 95% moving-block bootstrap interval of the R-score (``intervals``; seeds resampled
    too), and the paper's numbers."""
    recs = read_scores(score_files, system)
    errors, length = window_errors(recs)
    skip = (*WINDOW_FIELDS, "setup", "run", "preset")
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in skip} for r in recs])
    agg = {"n_seeds": ("seed", "nunique")}
    for s in SCORES:
        if s in df:
            agg[f"{s}_mean"] = (s, "mean")
            agg[f"{s}_std"] = (s, lambda v: float(v.std(ddof=0)) if len(v) > 1 else math.nan)
    for s in ("val_r_score", *SECONDS):
        if s in df:
            agg[f"{s}_mean"] = (s, "mean")
    table = df.groupby(["row", "scheme", "prior", "solver"], sort=False).agg(**agg).reset_index()
    paper = PAPER.get(system, {})
    table["paper_r_score"] = [paper.get(r, (math.nan,) * 3)[0] for r in table["row"]]
    table["paper_fourdvar_score"] = [paper.get(r, (math.nan,) * 3)[1] for r in table["row"]]
    odes = [paper_ode(paper.get(r, (None, None, ""))[2]) for r in table["row"]]
    table["paper_ode_score"] = [value for value, _ in odes]
    table["paper_ode_note"] = [note for _, note in odes]
    table.insert(1, "label", table["row"].map(row_label))
    order = {r: i for i, r in enumerate(row_order(system))}
    table = table.sort_values("row", key=lambda s: s.map(lambda r: order.get(r, len(order))))
    table = table.reset_index(drop=True)
    cis = [intervals.interval(errors[r], length) if r in errors else (math.nan,) * 2
           for r in table["row"]]  # fmt: skip
    at = table.columns.get_loc("r_score_std") + 1
    table.insert(at, "r_score_ci_low", [lo for lo, _ in cis])
    table.insert(at + 1, "r_score_ci_high", [hi for _, hi in cis])
    floor = table.loc[table["row"] == FLOOR, "r_score_mean"]
    if len(floor):
        table.insert(
            table.columns.get_loc("r_score_std") + 1,
            "ratio",
            table["r_score_mean"] / float(floor.iloc[0]),
        )
    for k in ("bayes_expected_rscore", "bayes_ess_min", "bayes_ess_median", "bayes_mc_mse"):
        if k in df:
            table[k] = table["row"].map(df.groupby("row")[k].mean())
    table["run"] = recs[0].get("run", "")
    table["setup"] = describe_setup(recs[0]["setup"]) if "setup" in recs[0] else ""
    return table


def make_pairs(score_files: list[str | Path], system: str) -> pd.DataFrame:
    """Every pair of rows (a before b in the table's order): the mean difference of their
    R-scores (b - a; negative: b is better), its paired 95% interval and what it supports."""
    recs = read_scores(score_files, system)
    errors, length = window_errors(recs)
    order = {r: i for i, r in enumerate(row_order(system))}
    rows = sorted(errors, key=lambda r: order.get(r, len(order)))
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            diff, lo, hi = intervals.paired_interval(errors[a], errors[b], length)
            out.append({
                "row_a": a, "row_b": b, "n_seeds_a": len(errors[a]), "n_seeds_b": len(errors[b]),
                "r_score_a": errors[a].mean(), "r_score_b": errors[b].mean(),
                "diff_b_minus_a": diff, "ci_low": lo, "ci_high": hi,
                "verdict": intervals.verdict(lo, hi, a, b),
            })  # fmt: skip
    return pd.DataFrame(out)


def write_table(
    score_files, system: str, out: str | Path, preset: str | None = None, caption: str = ""
) -> pd.DataFrame:
    """Write the table of ``system`` as CSV; ``preset`` names the preset it comes from (default:
    the score files' own) and ``caption`` (a ``note`` column, where given) says what its numbers
    are not (e.g. the quick preset's short training)."""
    score_files = list(score_files)
    table = make_table(score_files, system)
    if preset is None:
        preset = read_json(score_files[0], f"score file {score_files[0]}", "").get("preset", "")
    table.insert(0, "preset", preset)
    if caption:
        table.insert(1, "note", caption)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    return table


def write_pairs(score_files, system: str, out: str | Path) -> pd.DataFrame:
    """Write ``make_pairs`` as CSV (the paired intervals behind every comparison of rows)."""
    pairs = make_pairs(list(score_files), system)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out, index=False, float_format="%.4g")
    return pairs
