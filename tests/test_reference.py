"""The committed reference results (reference/<preset>/) hold every paper row with finite scores."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fourdvarnet.config import resolve_preset
from fourdvarnet.tables import PAPER, row_order

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TABLES = sorted(REFERENCE.glob("*/table[12].csv"))


def test_reference_results_exist():
    assert TABLES, f"no reference tables under {REFERENCE}"


@pytest.mark.parametrize("path", TABLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_reference_table_has_every_paper_row_with_finite_scores(path):
    system = {"table1": "l63", "table2": "l96"}[path.stem]
    df = pd.read_csv(path)
    raw = yaml.safe_load((path.parent / "config.yaml").read_text())
    rows = resolve_preset({**raw, "preset": path.parent.name})["experiments"]
    assert set(PAPER[system]) <= set(rows[system]) == set(df["row"])
    assert list(df["row"]) == [r for r in row_order(system) if r in rows[system]]
    assert (df["preset"] == path.parent.name).all()
    for col in ("r_score_mean", "fourdvar_score_mean", "ode_score_mean"):
        # the direct CNN (prior none) has no prior, so no ODE-score
        values = df[col] if col != "ode_score_mean" else df.loc[df["prior"] != "none", col]
        assert all(math.isfinite(v) and v >= 0 for v in values), col
    # the figures of every system the preset has rows for (the cpu preset: L63 only)
    figures = {"fig2_energy_pathways": "l63", "fig3_l63_examples": "l63", "fig4_l96": "l96"}
    for name, fig_system in figures.items():
        if rows.get(fig_system):
            assert (path.parent / f"{name}.pdf").read_bytes().startswith(b"%PDF"), name
