"""scripts/collect_scores.py: a reference's seeds gathered run by run, its table from all."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("collect_scores", REPO / "scripts/collect_scores.py")
collect_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_scores)


def _write(root: Path, row: str, seed: int, errors) -> None:
    scheme, prior, solver = row.split("-")
    rec = {
        "system": "l63", "scheme": scheme, "prior": prior, "solver": solver, "seed": seed,
        "r_score": float(np.mean(errors)), "window": 200, "window_r_score": list(errors),
        "window_start": list(range(0, 4 * len(errors), 4)),
    }  # fmt: skip
    path = root / "l63" / row / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_seeds_kept_run_by_run_make_one_table(tmp_path):
    rng = np.random.default_rng(0)
    ref = tmp_path / "reference"
    for seed in (0, 1):
        results = tmp_path / f"run{seed}"
        _write(results, "none-rk4-enks", seed, rng.gamma(2, 1, 300))
        _write(results, "supervised-rk4-conv", seed, rng.gamma(2, 1, 300) + seed)
        args = ["--preset", "cpu", "--system", "l63", "--seed", str(seed)]
        args += ["--results", str(results), "--reference", str(ref)]
        collect_scores.main(args + (["--learned-only"] if seed else []))
    table = pd.read_csv(ref / "table1.csv").set_index("row")
    assert table.loc["supervised-rk4-conv", "n_seeds"] == 2  # both runs' seeds
    assert table.loc["none-rk4-enks", "n_seeds"] == 1  # the baseline kept once
    assert table.loc["supervised-rk4-conv", "r_score_std"] > 0
    assert (table["preset"] == "cpu").all()
    pairs = pd.read_csv(ref / "pairs_table1.csv")
    assert len(pairs) == 1 and pairs["n_seeds_b"].iloc[0] == 2
    # a kept seed is not replaced by other scores unasked
    _write(tmp_path / "run1", "supervised-rk4-conv", 1, rng.gamma(2, 1, 300))
    again = ["--preset", "cpu", "--system", "l63", "--seed", "1", "--learned-only"]
    again += ["--results", str(tmp_path / "run1"), "--reference", str(ref)]
    with pytest.raises(SystemExit, match="--replace"):
        collect_scores.main(again)
    collect_scores.main(again + ["--replace"])
