#!/usr/bin/env bash
# Run a preset of the pipeline on a bare machine and pack what it produced into one archive.
#
#   scripts/run_and_pack.sh [PRESET] [SEEDS] [OUTDIR] [TIME_LIMIT_S]
#   e.g. scripts/run_and_pack.sh paper "[0,1,2]" run-output 3600
#
# OUTDIR (relative to the repository root) defaults to that root. Where snakemake or netCDF4
# are missing, the wheels in .whl/ are installed into /tmp/site first: download them beforehand
# from your package index,
#   pip download --dest .whl "snakemake==9.27.1" "netCDF4>=1.6" "xarray>=2023.1"
# with the GPU machine's Python version and platform (or pip download's --python-version,
# --platform and --only-binary=:all:); nothing is needed where `pip install -e '.[workflow]'`
# already ran. The package itself is used from src/ without installing. The run stops cleanly
# after TIME_LIMIT_S seconds (default 0: no limit); rerunning the script resumes where it
# stopped when the previous run's results/ is there (unpack the archive in the repository root
# first).
#
# Archive OUTDIR/results-PRESET.tar.gz, at most a few MiB (no reconstructions, no data):
#   results/table1.csv, results/table2.csv, figures/*.{pdf,png}
#   results/PRESET/eval/*/*/*.json      scores of every row and seed
#   results/PRESET/models/*/*/*.pt      checkpoints (weights, config, validation record)
#   results/PRESET/benchmarks/**.tsv    Snakemake's per-job wall times and memory
#   results/PRESET/logs/**.log          per-job logs (progress line per epoch)
#   run-info.txt                        commit, device, library versions, command, stage wall times
set -uo pipefail
preset=${1:-paper}
seeds=${2:-[0]}
outdir=${3:-.}
limit=${4:-0}
cd "$(dirname "$0")/.."

if ! python3 -c "import snakemake, netCDF4" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

cmd=(python3 -m snakemake --config "preset=$preset" "seeds=$seeds" --keep-going)
start=$(date +%s)
if [ "$limit" -gt 0 ]; then
    timeout --signal=INT --kill-after=30 "$limit" "${cmd[@]}" > snakemake.log 2>&1
else
    "${cmd[@]}" > snakemake.log 2>&1
fi
rc=$?
wall=$(( $(date +%s) - start ))
tail -n 25 snakemake.log

{
    echo "preset: $preset  seeds: $seeds  exit status: $rc  wall: ${wall} s"
    echo "command: ${cmd[*]}"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "date: $(date -u +%FT%TZ)"
    python3 - <<'PY'
import importlib.metadata as md
import torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
print("device:", device)
# the data are bit-identical everywhere; training and scores depend on the torch build
print("versions:", ", ".join(f"{p} {md.version(p)}" for p in
      ("torch", "numpy", "scipy", "xarray", "netCDF4", "snakemake")))
PY
    echo "per-stage wall time (s), from results/$preset/benchmarks:"
    for stage in simulate train evaluate; do
        find "results/$preset/benchmarks/$stage" -name '*.tsv' 2>/dev/null \
            | xargs -r tail -q -n 1 | awk -v s="$stage" '{t+=$1; n++} END {printf "  %s: %d jobs, %.0f s\n", s, n, t}'
    done
} > run-info.txt
cat run-info.txt

mkdir -p "$outdir"
tar czf "$outdir/results-$preset.tar.gz" run-info.txt snakemake.log \
    $(ls results/table*.csv figures/*.pdf figures/*.png 2>/dev/null) \
    $(find "results/$preset" \( -name '*.json' -o -name '*.pt' -o -name '*.tsv' -o -name '*.log' \) 2>/dev/null)
ls -l "$outdir/results-$preset.tar.gz"
exit "$rc"
