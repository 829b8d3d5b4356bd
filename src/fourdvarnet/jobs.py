"""A job's lifetime: it ends when the Snakemake that started it ends.

``die_with_parent`` is called first thing by every job of the workflow (``workflow/scripts``), so
that ``--unlock`` and a new run never run the same job twice at once after a Snakemake was
killed, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("fourdvarnet")


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent PID, start time) of a live process; None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), fields[19])


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_snakemake(args: list[str]) -> bool:
    """``snakemake ...`` or ``python [options] -m snakemake ...`` / ``python .../snakemake``."""
    first = os.path.basename(args[0]) if args else ""
    if first.startswith("snakemake"):
        return True
    if not first.startswith(("python", "pypy")):
        return False
    rest = iter(args[1:])
    for a in rest:
        if a == "-m":
            return next(rest, "") == "snakemake"
        if a in ("-X", "-W", "-Q"):
            next(rest, "")
        elif not a.startswith("-"):
            return os.path.basename(a) == "snakemake"
    return False


def _ancestors() -> tuple[tuple[int, str] | None, int | None]:
    """Up the ancestors: the topmost Snakemake (PID, start time), and the first ancestor that
    is not running this job's script (the one that started it)."""
    top, starter, pid = None, None, os.getppid()
    for _ in range(64):
        st = _stat(pid)
        if st is None:
            break
        if _is_snakemake(_argv(pid)):
            top = (pid, st[1])
        if starter is None and not any(sys.argv[0] in a for a in _argv(pid)):
            starter = pid
        if pid <= 1:
            break
        pid = st[0]
    return top, starter


def _end(why: str) -> None:
    log.error("%s: ending this job (SIGTERM)", why)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(pid: int, start: str, poll: float) -> None:
    while (st := _stat(pid)) is not None and st[1] == start:
        time.sleep(poll)
    _end(f"Snakemake (process {pid}) is gone")


def die_with_parent(poll: float = 0.5) -> None:
    """End this job when the Snakemake that started it ends, even by ``kill -9``. Linux only
    (elsewhere a no-op).

    Snakemake 9 runs a ``script:`` job from a thread of its main process as ``bash -c 'set -euo
    pipefail; python <script>'``; bash 5.1 and later replaces itself with Python, so the job is a
    child of Snakemake, but an older bash, or a ``python -m snakemake`` sub-invocation (``run:``
    and shadow rules), stands in between and outlives a killed Snakemake. So the kernel sends
    this process SIGTERM when its parent ends (``PR_SET_PDEATHSIG``), and a daemon thread checks
    every ``poll`` seconds that the topmost ``snakemake`` among its ancestors (the one the user
    started; on a cluster node, the job step) still runs, and sends SIGTERM when it does not.
    SIGTERM ends the job at once: its outputs are written atomically, so it leaves nothing that
    looks complete (a training keeps ``<checkpoint>.resume``). A job whose Snakemake died while
    it started (its chain then reaches PID 1 with no Snakemake) ends here. Without a Snakemake
    among its ancestors (Snakemake's Python API) only the parent is watched.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    top, starter = _ancestors()
    if top is None:
        if starter == 1:
            _end("the Snakemake that started this job is gone (its parents end at PID 1)")
        return
    threading.Thread(target=_watch, args=(*top, poll), name="die_with_parent", daemon=True).start()
