"""Generate the step-timings table of docs/performance.md from src/fourdvarnet/step_timings.csv.

The table sits in a marked block of the document::

    <!-- timings: src/fourdvarnet/step_timings.csv -->

    | device | system | prior | ... |
    ...

    <!-- end timings -->

``python scripts/performance_tables.py`` rewrites the block from the CSV (the path is relative to
the repository root); ``--check`` changes nothing, prints the blocks that differ from their CSV
and exits 1 if any does. Everything between the markers is generated: edit the CSV, never the
table. The blocks are found and rewritten by the functions of ``scripts/reproduction_tables.py``,
which makes REPRODUCTION.md's tables the same way.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"

try:
    from fourdvarnet import step_timings
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(REPO / "src"))
    from fourdvarnet import step_timings

START = re.compile(r"^<!-- timings: (?P<csv>\S+) -->$", re.MULTILINE)
END = "<!-- end timings -->"
HEADERS = (
    "device", "system", "prior", "measure", "batch", "solver iterations", "seconds per step",
    "measured", "setup", "how", "commit",
)  # fmt: skip


@functools.cache
def _reproduction_tables():
    """``scripts/reproduction_tables.py``, whose functions find, rewrite and check the blocks."""
    spec = importlib.util.spec_from_file_location(
        "reproduction_tables", REPO / "scripts" / "reproduction_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def duration(low: float, high: float) -> str:
    """A range of seconds as the docs write it: ``55-71 ms``, ``10.9-11.4 s``, ``80 ms``."""

    def unit(v: float) -> str:
        return "s" if v >= 1 else "ms"

    def number(v: float) -> str:
        return f"{v:.4g}" if v >= 1 else f"{v * 1000:.4g}"

    if low == high:
        return f"{number(low)} {unit(low)}"
    if unit(low) == unit(high):
        return f"{number(low)}-{number(high)} {unit(high)}"
    return f"{number(low)} {unit(low)}-{number(high)} {unit(high)}"


def render(csv_path: str | Path) -> str:
    """The markdown table of ``csv_path``: one line per measurement, in the file's order."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for t in step_timings.load(csv_path):
        cells = [
            t.device, t.system, t.prior, t.measure, str(t.batch_size), str(t.n_iter),
            duration(t.seconds_low, t.seconds_high), t.measured_on, t.setup, t.how, t.commit,
        ]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def body(csv_path: str | Path) -> str:
    """What a block holds between its markers: the table between two blank lines."""
    return _reproduction_tables().body(csv_path, render)


def update(text: str):
    """``text`` with its timings blocks regenerated, and the blocks that changed."""
    return _reproduction_tables().update(text, REPO, body, START, END)


def blocks(text: str):
    return _reproduction_tables().blocks(text, START, END)


def main(argv: list[str] | None = None) -> int:
    return _reproduction_tables().command(
        argv, __doc__.split("\n\n")[0], DOC, "timings", "scripts/performance_tables.py",
        root=REPO, render=body, start_marker=START, end_marker=END, show_diff=False,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
