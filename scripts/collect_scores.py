"""Keep a run's score files in a reference and rebuild its table from every seed kept there.

A reference at the paper's size gathers its seeds over several runs (one seed a run): each run's
small per-row score files (``results/<preset>/eval/<system>/<row>/seed<k>.json``, with their
per-window errors) are copied into ``reference/<preset>/scores/<system>/<row>/``, and the table
and its pairs (the paired intervals) are rebuilt from all of them, so no finished seed is lost.

    python scripts/collect_scores.py --preset cpu --system l63 --seed 0
    python scripts/collect_scores.py --preset cpu --system l63 --seed 1 --learned-only

``--learned-only`` copies the learned rows alone (the baselines are deterministic: their one
evaluation is kept from the first run). A file already kept is replaced only with ``--replace``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fourdvarnet.tables import write_pairs, write_table  # noqa: E402

TABLES = {"l63": "table1", "l96": "table2"}


def collect(
    results: Path, reference: Path, system: str, seed: int, learned_only: bool, replace: bool
) -> list[Path]:
    """Copy the score files of ``seed`` (every row, or the learned rows) of ``system`` from
    ``results`` (``<preset>/eval``) into ``reference`` (``<preset>/scores``); returns them."""
    found = sorted((results / system).glob(f"*/seed{seed}.json"))
    if learned_only:
        found = [f for f in found if not f.parent.name.startswith("none-")]
    if not found:
        raise SystemExit(f"no score file of seed {seed} under {results / system}")
    copied = []
    for src in found:
        dest = reference / system / src.parent.name / src.name
        if dest.exists() and not filecmp.cmp(src, dest, shallow=False) and not replace:
            raise SystemExit(f"{dest} exists with other scores: --replace to replace it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        copied.append(dest)
    return copied


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--system", required=True, choices=sorted(TABLES))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--learned-only", action="store_true")
    ap.add_argument("--replace", action="store_true")
    ap.add_argument("--results", default=None, help="default: results/<preset>/eval")
    ap.add_argument("--reference", default=None, help="default: reference/<preset>")
    args = ap.parse_args(argv)
    results = Path(args.results or f"results/{args.preset}/eval")
    reference = Path(args.reference or f"reference/{args.preset}")
    scores = reference / "scores"
    copied = collect(results, scores, args.system, args.seed, args.learned_only, args.replace)
    kept = sorted((scores / args.system).glob("*/seed*.json"))
    table = reference / f"{TABLES[args.system]}.csv"
    write_table(kept, args.system, table, preset=args.preset)
    write_pairs(kept, args.system, reference / f"pairs_{TABLES[args.system]}.csv")
    print(f"copied {len(copied)} score file(s); {table} from {len(kept)} kept")


if __name__ == "__main__":
    main()
