"""User-facing docs speak of the project only: nothing a user who cloned the repository lacks."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Patterns of infrastructure outside the repository (case-insensitive except ``$OUT``).
FORBIDDEN = [
    re.compile(r"\.\./shared", re.IGNORECASE),
    re.compile(r"\$OUT\b"),
    re.compile(r"\b570 s\b", re.IGNORECASE),
    re.compile(r"device tool", re.IGNORECASE),
    re.compile(r"this machine", re.IGNORECASE),
    re.compile(r"SPEC section", re.IGNORECASE),
    re.compile(r"SPEC\.md", re.IGNORECASE),
    re.compile(r"device-wheels", re.IGNORECASE),
]


def doc_files() -> list[Path]:
    docs = sorted((REPO / "docs").rglob("*.md"))
    return [REPO / "README.md", REPO / "REPRODUCTION.md", *docs]


def test_docs_mention_no_outside_infrastructure():
    files = doc_files()
    assert len(files) > 2, "docs/*.md not found"
    hits = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for pattern in FORBIDDEN:
                if pattern.search(line):
                    where = f"{path.relative_to(REPO)}:{number}"
                    hits.append(f"{where}: {pattern.pattern!r} in {line.strip()!r}")
    assert not hits, "infrastructure outside the repository mentioned:\n" + "\n".join(hits)
