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
    rows = resolve_preset(yaml.safe_load((path.parent / "config.yaml").read_text()))["experiments"]
    assert set(PAPER[system]) <= set(rows[system]) == set(df["row"])
    assert list(df["row"]) == [r for r in row_order(system) if r in rows[system]]
    assert (df["preset"] == path.parent.name).all()
    for col in ("r_score_mean", "fourdvar_score_mean", "ode_score_mean"):
        # the direct CNN (prior none) has no prior, so no ODE-score
        values = df[col] if col != "ode_score_mean" else df.loc[df["prior"] != "none", col]
        assert all(math.isfinite(v) and v >= 0 for v in values), col
    for name in ("fig2_energy_pathways", "fig3_l63_examples", "fig4_l96"):
        assert (path.parent / f"{name}.pdf").read_bytes().startswith(b"%PDF")
