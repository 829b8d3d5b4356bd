"""Generate the tables of REPRODUCTION.md from the committed reference CSVs.

Each table of a reference run sits in a marked block of the document::

    <!-- table: reference/cpu/table1.csv -->

    | scheme | Phi | solver | ... |
    ...

    <!-- end table -->

``python scripts/reproduction_tables.py`` rewrites every block's content from its CSV (the path is
relative to the document's folder); ``--check`` changes nothing, prints the blocks that differ
from their CSV and exits 1 if any does. Everything between the markers is generated: edit the
CSV (or this script), never the table.

The CSVs are those of ``fourdvarnet.tables.write_table``. Older references (no ``label`` nor
``paper_ode_note`` column, the paper's ODE-score as printed, a std of 0 for one seed) are read
too: :func:`load` brings both to today's columns.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "REPRODUCTION.md"

try:
    from fourdvarnet.tables import PRIOR_NAMES, SOLVER_NAMES, paper_ode, row_label
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(REPO / "src"))
    from fourdvarnet.tables import PRIOR_NAMES, SOLVER_NAMES, paper_ode, row_label

START = re.compile(r"^<!-- table: (?P<csv>\S+) -->$", re.MULTILINE)
END = "<!-- end table -->"

#: The table's columns: header -> the CSV columns it needs (a column whose CSV columns are all
#: absent is left out, e.g. ``ratio to floor`` of the L96 tables, which have no Bayes floor).
COLUMNS = {
    "scheme": ("scheme",),
    "Phi": ("prior",),
    "solver": ("solver",),
    "seeds": ("n_seeds",),
    "R-score (test, mean ± std)": ("r_score_mean",),
    "95% interval": ("r_score_ci_low",),
    "paper": ("paper_r_score",),
    "vs paper": ("paper_r_score",),
    "validation": ("val_r_score_mean",),
    "ratio to floor": ("ratio",),
    "4DVar (true / own prior)": ("fourdvar_score_mean", "fourdvar_score_own_mean"),
    "ODE-score": ("ode_score_mean",),
    "roughness": ("roughness_mean",),
    "seconds (eval / train)": ("seconds_mean", "train_seconds_mean"),
}


def load(csv_path: str | Path) -> pd.DataFrame:
    """The table of ``csv_path`` in today's columns: ``label`` from the row's name where the CSV
    has none, the paper's ODE-score as a number with ``paper_ode_note`` (``<1e-4``), and the
    standard deviations empty for one seed."""
    df = pd.read_csv(csv_path)
    if "label" not in df:
        df.insert(df.columns.get_loc("row") + 1, "label", df["row"].map(row_label))
    if "paper_ode_note" not in df and "paper_ode_score" in df:
        printed = ["" if pd.isna(v) else str(v) for v in df["paper_ode_score"]]
        odes = [paper_ode(p) for p in printed]
        at = df.columns.get_loc("paper_ode_score") + 1
        df["paper_ode_score"] = [value for value, _ in odes]
        df.insert(at, "paper_ode_note", [note for _, note in odes])
    one_seed = df["n_seeds"] <= 1
    for col in df.columns:
        if col.endswith("_std"):
            df[col] = df[col].astype(float).mask(one_seed)
    return df


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt(v) -> str:
    """A number to 3 significant digits, ``-`` where there is none."""
    v = _number(v)
    return "-" if not math.isfinite(v) else f"{v:.3g}"


def pair(a, b) -> str:
    return f"{fmt(a)} / {fmt(b)}"


def vs_paper(ours, paper) -> str:
    """Our R-score over the paper's minus 1, as a signed percent."""
    ours, paper = _number(ours), _number(paper)
    if not (math.isfinite(ours) and math.isfinite(paper)) or paper <= 0:
        return "-"
    percent = round(100 * (ours / paper - 1))
    return "0%" if percent == 0 else f"{percent:+d}%"


def r_score(rec) -> str:
    """The mean R-score, with ``± std`` where it averages several seeds."""
    mean, std = fmt(rec.get("r_score_mean")), _number(rec.get("r_score_std"))
    if _number(rec.get("n_seeds")) > 1 and math.isfinite(std):
        return f"{mean} ± {fmt(std)}"
    return mean


def interval(rec) -> str:
    """The R-score's 95% moving-block bootstrap interval (seeds resampled too), ``-`` where the
    table has none (score files without their per-window errors)."""
    lo, hi = _number(rec.get("r_score_ci_low")), _number(rec.get("r_score_ci_high"))
    return f"{fmt(lo)}-{fmt(hi)}" if math.isfinite(lo) and math.isfinite(hi) else "-"


def cells(rec) -> dict[str, str]:
    """One table row's cells, by column header."""
    prior = rec["prior"]
    return {
        "scheme": rec["scheme"],
        "Phi": "-" if prior == "none" else PRIOR_NAMES.get(prior, prior),
        "solver": SOLVER_NAMES.get(rec["solver"], rec["solver"]),
        "seeds": str(int(rec["n_seeds"])),
        "R-score (test, mean ± std)": r_score(rec),
        "95% interval": interval(rec),
        "paper": fmt(rec.get("paper_r_score")),
        "vs paper": vs_paper(rec.get("r_score_mean"), rec.get("paper_r_score")),
        "validation": fmt(rec.get("val_r_score_mean")),
        "ratio to floor": fmt(rec.get("ratio")),
        "4DVar (true / own prior)": pair(
            rec.get("fourdvar_score_mean"), rec.get("fourdvar_score_own_mean")
        ),
        "ODE-score": fmt(rec.get("ode_score_mean")),
        "roughness": fmt(rec.get("roughness_mean")),
        "seconds (eval / train)": pair(rec.get("seconds_mean"), rec.get("train_seconds_mean")),
    }


def render(csv_path: str | Path) -> str:
    """The markdown table of ``csv_path``: one line per row, in the CSV's order."""
    df = load(csv_path)
    headers = [h for h, need in COLUMNS.items() if any(c in df for c in need)]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for rec in df.to_dict("records"):
        row = cells(rec)
        lines.append("| " + " | ".join(row[h] for h in headers) + " |")
    return "\n".join(lines) + "\n"


def body(csv_path: str | Path, table=None) -> str:
    """What a block holds between its markers: the table of ``csv_path`` (``table``, default
    :func:`render`) between two blank lines."""
    return "\n" + (table or render)(csv_path) + "\n"


class Block(NamedTuple):
    """A marked block: its CSV, where it is, and what it holds between its markers."""

    csv: str  # as the start marker writes it
    line: int  # the start marker's line (1-based)
    start: int  # offsets in the text of the content between the markers' lines
    end: int
    content: str


def blocks(text: str, start_marker: re.Pattern = START, end_marker: str = END) -> list[Block]:
    """The marked blocks of ``text``, in order; ValueError for a block without its end marker
    or a start marker inside a block. The markers are REPRODUCTION.md's unless given (the start
    marker's pattern names the file in its group ``csv``)."""
    found = []
    pos = 0
    while m := start_marker.search(text, pos):
        line = text.count("\n", 0, m.start()) + 1
        start = m.end() + 1  # after the marker's newline
        end = text.find("\n" + end_marker, m.end())
        if end < 0:
            raise ValueError(f"line {line}: block {m['csv']} has no '{end_marker}' line")
        end += 1
        nested = start_marker.search(text, start, end)
        if nested:
            raise ValueError(f"line {line}: block {m['csv']} holds another start marker")
        found.append(Block(m["csv"], line, start, end, text[start:end]))
        pos = end + len(end_marker)
    return found


def update(
    text: str, root: Path, render=body, start_marker: re.Pattern = START, end_marker: str = END
) -> tuple[str, list[Block]]:
    """``text`` with every block regenerated from its CSV (paths relative to ``root``) by
    ``render`` (default: :func:`body`), and the blocks that changed."""
    changed, out, pos = [], [], 0
    for b in blocks(text, start_marker, end_marker):
        path = root / b.csv
        if not path.is_file():
            raise FileNotFoundError(f"line {b.line}: block {b.csv}: no such file {path}")
        new = render(path)
        if new != b.content:
            changed.append(b)
        out += [text[pos : b.start], new]
        pos = b.end
    out.append(text[pos:])
    return "".join(out), changed


def command(
    argv: list[str] | None,
    description: str,
    default_doc: Path,
    noun: str,
    script: str,
    root: Path | None = None,
    render=body,
    start_marker: re.Pattern = START,
    end_marker: str = END,
    show_diff: bool = True,
) -> int:
    """The command line of a script that generates a document's marked blocks: rewrite them,
    or with ``--check`` report those that differ from their CSV (exit 1). CSV paths are
    relative to ``root`` (default: the document's folder); ``noun`` names the blocks in the
    messages (e.g. ``table``), ``script`` the command that regenerates them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "doc", nargs="?", type=Path, default=default_doc, help="default: %(default)s"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block differs"
    )
    args = parser.parse_args(argv)
    root = root or args.doc.resolve().parent
    try:
        name = args.doc.resolve().relative_to(Path.cwd())
    except ValueError:
        name = args.doc
    text = args.doc.read_text(encoding="utf-8")
    try:
        new, changed = update(text, root, render, start_marker, end_marker)
    except (ValueError, FileNotFoundError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    n = len(blocks(text, start_marker, end_marker))
    if args.check:
        for b in changed:
            print(f"{name}:{b.line}: block {b.csv} differs from its CSV")
            if show_diff:
                old, new_lines = b.content.splitlines(), render(root / b.csv).splitlines()
                diff = difflib.unified_diff(old, new_lines, "document", "CSV", lineterm="", n=0)
                print("\n".join(f"    {d}" for d in diff))
        if changed:
            print(f"to regenerate them: python {script} {name}")
            return 1
        print(f"{name}: {n} {noun} block(s) agree with their CSVs")
        return 0
    if changed:
        args.doc.write_text(new, encoding="utf-8")
    print(f"{name}: {len(changed)} of {n} {noun} block(s) regenerated")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command(argv, __doc__.split("\n\n")[0], DOC, "table", "scripts/reproduction_tables.py")


if __name__ == "__main__":
    sys.exit(main())
