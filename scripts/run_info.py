"""Write a reference run's run-info.txt: how, where and how long, from the run's own records.

    python scripts/run_info.py --preset cpu --seeds "[0]" --rc 0 \\
        --started 2026-12-07T19:48:25Z --ended 2026-12-07T21:20:00Z \\
        --command "snakemake --config preset=cpu --cores 2" --commit 8dee281 > run-info.txt

The wall time of each job comes from Snakemake's benchmark files
(``results/<preset>/benchmarks/**.tsv``); the machine from /proc/cpuinfo (the model, the number
of CPUs and whether they have AVX-512 and AMX, which change the speed of torch's CPU kernels and
so the epochs a time budget holds).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import os
from datetime import datetime
from pathlib import Path


def cpu_line() -> str:
    """The CPU model, its count and the vector extensions that matter to torch's kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                  if ln.startswith("model name")), "unknown")  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    ext = [f for f in ("avx2", "avx512f", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs ({', '.join(ext) or 'no AVX2'})"


def job_seconds(benchmarks: Path) -> dict[str, float]:
    """Wall seconds of each job, by its benchmark file's path below ``benchmarks``."""
    out = {}
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows:
            out[tsv.relative_to(benchmarks).with_suffix("").as_posix()] = float(rows[-1]["s"])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for name in ("--preset", "--seeds", "--rc", "--started", "--ended", "--command", "--commit"):
        ap.add_argument(name, required=True)
    ap.add_argument("--results", default="results")
    ap.add_argument(
        "--benchmarks", default=None, help="the benchmark files' folder (default: RESULTS/PRESET/"
        "benchmarks; a sweep's: RESULTS/PRESET/sweep, one folder per point)",
    )  # fmt: skip
    ap.add_argument("--target", default="default target", help="the command's target, in words")
    args = ap.parse_args(argv)
    benchmarks = Path(args.benchmarks or Path(args.results) / args.preset / "benchmarks")
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    wall = datetime.strptime(args.ended, stamp) - datetime.strptime(args.started, stamp)
    wall_s = int(wall.total_seconds())
    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "numpy", "snakemake"))
    print(f"preset: {args.preset}  seeds: {args.seeds}  rc {args.rc}  wall {wall_s} s "
          f"({round(wall_s / 60)} min)")  # fmt: skip
    print(f"command: {args.command} ({args.target}; default profile), in a clean checkout of "
          f"commit {args.commit},")  # fmt: skip
    print(f"  PYTHONPATH=src; started {args.started}, ended {args.ended}")
    print(f"device: CPU ({cpu_line()}), 1 thread per job, eager")
    print(f"versions: {versions}")
    print(f"wall time per job (s), from {benchmarks.as_posix()}:")
    for job, seconds in job_seconds(benchmarks).items():
        print(f"  {job:<48} {seconds:>6.0f}")
    print(f"note: config.yaml beside this file (the preset: presets.{args.preset})")


if __name__ == "__main__":
    main()
