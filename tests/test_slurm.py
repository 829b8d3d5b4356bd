"""End-to-end runs through a real local SLURM cluster with profiles/slurm.

Both tests need the ``slurm_cluster`` fixture (root + Debian's slurm/munge packages); they are
opt-in (RUN_SLURM_TESTS=1; CI sets REQUIRE_SLURM=1, which also makes a skip a failure), since
as root the fixture rewrites /etc/slurm/slurm.conf and starts daemons (restored afterwards).
Run: ``RUN_SLURM_TESTS=1 pytest -m slurm -s``.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/table1.csv"
GPU_RULE = "train"
# No sacct database on the test cluster: poll squeue, and poll early (about 12 s per DAG level).
SLURM_ARGS = [
    "--workflow-profile",
    "profiles/slurm",
    "--config",
    "preset=ci",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-keep-successful-logs",
]

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
HEADER = re.compile(r"^\s*(localrule|rule) (\w+):\s*$", re.M)
SBATCH = re.compile(r"sbatch call: (.*)$", re.M)
TOTAL = re.compile(r"^total\s+(\d+)\s*$", re.M)


def run_snakemake(workdir: Path, args: list[str], timeout: float) -> tuple[str, float]:
    """Run snakemake in its own process group; SIGKILL the group after ``timeout`` seconds.

    Returns (combined stdout+stderr, wall seconds); fails the test on a non-zero exit.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", *args]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\nKILLED: snakemake timed out after {timeout}s"
    wall = time.monotonic() - start
    n = len(list(workdir.glob("snakemake-*.log")))
    (workdir / f"snakemake-{n + 1}.log").write_text(out)  # kept for debugging
    if proc.returncode == -signal.SIGKILL:
        pytest.fail(out[-5000:])
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-8000:]}"
    return out, wall


def check_slurm_run(out: str, workdir: Path, cluster, gpu_rules=(GPU_RULE,)) -> str:
    """Assert every non-local job went through sbatch and the GPU rules asked for a GPU.

    Returns the sbatch command line of one training job.
    """
    subs = [(m[1], m[2], re.search(r"rule_(\w+)", m[3])[1]) for m in SUBMITTED.finditer(out)]
    headers = collections.Counter((kind, rule) for kind, rule in HEADER.findall(out))
    remote = collections.Counter({r: n for (k, r), n in headers.items() if k == "rule"})
    n_local = sum(n for (k, _), n in headers.items() if k == "localrule")
    total = int(TOTAL.search(out)[1])
    print(f"\nplanned {total} jobs: {dict(remote)} on SLURM, {n_local} local")

    # Every job snakemake planned either ran locally (localrules) or was submitted to SLURM.
    assert n_local + sum(remote.values()) == total
    assert collections.Counter(rule for _, _, rule in subs) == remote
    logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(logs) == len(subs), logs

    # The GPU rule asked SLURM for a GPU: the controller's record, and the sbatch line itself.
    gpu_ids = [sid for _, sid, rule in subs if rule in gpu_rules]
    assert {rule for _, _, rule in subs} >= set(gpu_rules), f"no job of each of {gpu_rules}"
    for sid in gpu_ids:
        job = cluster.show_job(sid)
        assert job["JobState"] == "COMPLETED", job
        assert re.search(r"gpu[:=]1\b", job.get("TresPerJob", "")), job
    calls = SBATCH.findall(out)
    assert len(calls) == len(subs)
    # the rule is in the --output log path
    gpu_calls = [c for c in calls if any(f"/rule_{r}/" in c for r in gpu_rules)]
    assert len(gpu_calls) == len(gpu_ids)
    assert all("--gpus=1" in c for c in gpu_calls), gpu_calls
    assert not any("--gpus" in c for c in calls if c not in gpu_calls)
    return next(c for c in gpu_calls if f"/rule_{GPU_RULE}/" in c)


def slurm_args(*config: str) -> list[str]:
    """SLURM_ARGS with more ``--config`` values after its ``preset=ci``."""
    at = SLURM_ARGS.index("preset=ci") + 1
    return [*SLURM_ARGS[:at], *config, *SLURM_ARGS[at:]]


def check_nothing_to_do(workdir: Path, config: tuple[str, ...] = ()) -> None:
    out, _ = run_snakemake(workdir, [*slurm_args(*config), "-n", TARGET], timeout=120)
    assert "Nothing to be done" in out, out[-3000:]


TOY_SNAKEFILE = """\
configfile: "config.yaml"

localrules: table

PRESET = config["preset"]
SEEDS = [1, 2]


rule prepare:
    output: "results/data.txt"
    shell: "echo preset={PRESET} > {output}"


rule train:
    input: "results/data.txt"
    output: "results/model_{seed}.txt"
    resources: gpu=1
    shell: "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {output}"


rule table:
    input: expand("results/model_{seed}.txt", seed=SEEDS)
    output: "results/table1.csv"
    shell: "(echo preset,{PRESET}; cat {input}) > {output}"
"""


@pytest.mark.slurm
def test_slurm_toy_workflow(slurm_cluster, tmp_path, record_property):
    """A 4-job toy workflow shaped like the project's, run through profiles/slurm."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    (tmp_path / "config.yaml").write_text("preset: full\n")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")

    out, wall = run_snakemake(tmp_path, [*SLURM_ARGS, "--verbose", TARGET], timeout=300)
    sbatch_line = check_slurm_run(out, tmp_path, slurm_cluster)
    table = (tmp_path / TARGET).read_text()
    assert table.startswith("preset,ci\n")
    assert table.count("CUDA_VISIBLE_DEVICES=0") == 2  # SLURM handed the (fake) GPU to train
    check_nothing_to_do(tmp_path)

    print(
        f"toy workflow through SLURM: {wall:.1f} s\nsbatch line of a {GPU_RULE} job:\n{sbatch_line}"
    )
    record_property("wall_s", round(wall, 1))


def copy_repository(dest: Path) -> None:
    """Copy the files git knows about (tracked, or untracked but not ignored)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, set(files.split("\0"))):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slurm
def test_slurm_ci_preset(slurm_cluster, tmp_path, record_property):
    """The project's own workflow, preset=ci, through profiles/slurm up to Table 1, on a subset
    of rows that has a job of every rule (data, GENN pre-training, training, evaluation, table);
    the whole DAG runs locally in tests/test_workflow.py."""
    copy_repository(tmp_path)
    timeout = float(os.environ.get("SLURM_CI_TIMEOUT", 1800))
    rows = ("experiments={l63: [none-rk4-fsgd, supervised-genn-conv], l96: []}",)
    args = [*slurm_args(*rows), "--verbose", TARGET]
    out, wall = run_snakemake(tmp_path, args, timeout=timeout)
    # training, GENN pre-training and evaluation declare gpu=1
    sbatch_line = check_slurm_run(
        out, tmp_path, slurm_cluster, ("train", "evaluate", "pretrain_genn")
    )
    assert (tmp_path / TARGET).is_file()
    check_nothing_to_do(tmp_path, rows)

    print(f"ci preset through SLURM: {wall:.1f} s\nsbatch line of a {GPU_RULE} job:\n{sbatch_line}")
    record_property("wall_s", round(wall, 1))


def _etc_slurm() -> dict:
    """Every file under /etc/slurm with its bytes (empty where there is none)."""
    root = Path("/etc/slurm")
    return (
        {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}
    )


def test_without_the_variable_the_slurm_tests_leave_the_system_alone(tmp_path):
    """``make test`` without RUN_SLURM_TESTS (and without CI's REQUIRE_SLURM) skips both SLURM
    tests before the fixture touches /etc/slurm or starts a daemon."""
    before = _etc_slurm()
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_SLURM_TESTS", "REQUIRE_SLURM")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         str(Path(__file__)), "-k", "toy_workflow or ci_preset"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "2 skipped" in proc.stdout, proc.stdout[-2000:]
    assert "RUN_SLURM_TESTS=1" in proc.stdout
    assert _etc_slurm() == before
