"""Plan check: what a preset's training costs, said before the first job starts.

The estimate counts the training steps of every learned row and seed from the configuration
(``train.<system>``: epochs, batch size, the iteration schedule; ``data.<system>.n_train``: the
training windows) and prices one step from measured per-step times: the ``step`` lines of
``step_timings.csv`` (``fourdvarnet.step_timings``, shown in docs/performance.md), each with the
batch size and solver iterations it was measured at and where, when and how (CPU: one core,
eager; GPU: the CUDA-graph path of one H100).

The middle of each range is taken, scaled linearly with the batch size and the number of solver
iterations (the CPU path is compute-bound; on the GPU the RK4 rows are launch-bound, so small
batches are overestimated). Euler priors are priced as RK4 and every GENN at the paper's widths,
so narrower GENNs (the quick preset's L96) are overestimated too. GENN pre-training, validation
and the evaluation jobs (the FSGD baselines) are not counted. It is an order of magnitude, meant
to tell minutes from weeks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import row_train
from .step_timings import step_table

#: (system, prior kind) -> (seconds per step, batch size, solver iterations) it was measured at,
#: from step_timings.csv (the middle of each measured range).
CPU_STEP = step_table("cpu")
GPU_STEP = step_table("gpu")

#: Above this many hours of CPU training, a local run without CUDA gets a warning.
WARN_HOURS = 2.0


@dataclass
class TrainingEstimate:
    """Training cost of a set of jobs, in hours of one CPU core / one GPU."""

    preset: str
    jobs: int
    cpu_hours: float
    gpu_hours: float
    longest_cpu_hours: float  # the longest single job on the CPU (a lower bound on wall time)


def learned_jobs(cfg: dict) -> list[tuple[str, str]]:
    """(system, row) of every training job of a resolved config: each learned row x seed."""
    seeds = cfg.get("seeds", [0])
    return [
        (system, row)
        for system, rows in cfg.get("experiments", {}).items()
        for row in rows
        if not row.startswith("none-")
        for _ in seeds
    ]


def mean_iterations(train_cfg: dict) -> float:
    """Solver iterations per step, averaged over the epochs of the schedule."""
    epochs = int(train_cfg.get("epochs", 1))
    schedule = sorted(train_cfg.get("schedule") or [{"epoch": 0, "n_iter": 5}], key=_epoch)
    total = 0
    for epoch in range(epochs):
        stage = [s for s in schedule if _epoch(s) <= epoch][-1:] or schedule[:1]
        total += int(stage[0].get("n_iter", 5))
    return total / max(epochs, 1)


def _epoch(stage: dict) -> int:
    return int(stage.get("epoch", 0))


def job_seconds(cfg: dict, system: str, row: str, table: dict) -> float:
    """Seconds of training steps of one job, priced with ``table`` (CPU_STEP or GPU_STEP), at
    most the row's time budget ``max_seconds``."""
    prior = row.split("-")[1]
    key = (system, "genn" if prior == "genn" else "ode")
    if key not in table:  # a system without measurements: price it as the dearer L96
        key = ("l96", key[1])
    seconds, ref_batch, ref_iter = table[key]
    tcfg = row_train(cfg["train"][system], row)
    n_train = int(cfg["data"][system].get("n_train", 1))
    batch = min(int(tcfg.get("batch_size", 1)), n_train)
    steps = (n_train // batch) * int(tcfg.get("epochs", 1))
    estimate = steps * seconds * (batch / ref_batch) * (mean_iterations(tcfg) / ref_iter)
    budget = float(tcfg.get("max_seconds") or 0)  # a job stops once its time budget is spent
    return min(estimate, budget) if budget else estimate


def estimate_training(cfg: dict, jobs: Iterable[tuple[str, str]] | None = None) -> TrainingEstimate:
    """Training cost of ``jobs`` ((system, row) pairs, one per seed; default: every learned row
    and seed of ``cfg``), ``cfg`` being the config with its preset applied."""
    jobs = learned_jobs(cfg) if jobs is None else list(jobs)
    cpu = [job_seconds(cfg, system, row, CPU_STEP) for system, row in jobs]
    gpu = [job_seconds(cfg, system, row, GPU_STEP) for system, row in jobs]
    return TrainingEstimate(
        preset=str(cfg.get("preset", "?")),
        jobs=len(jobs),
        cpu_hours=sum(cpu) / 3600,
        gpu_hours=sum(gpu) / 3600,
        longest_cpu_hours=max(cpu, default=0.0) / 3600,
    )


def format_hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def long_cpu_training(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable[tuple[str, str]] | None = None,
    threshold_hours: float = WARN_HOURS,
) -> TrainingEstimate | None:
    """The estimate of a run that would train for long on the CPU, or None: no training job,
    at most ``threshold_hours`` of CPU training, or CUDA (``cuda_available`` defaults to
    ``torch.cuda.is_available()``)."""
    est = estimate_training(cfg, jobs)
    if est.jobs == 0 or est.cpu_hours <= threshold_hours:
        return None
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return None if cuda_available else est


def estimate_line(est: TrainingEstimate, cores: int | None = None) -> str:
    """The estimate in one line; ``cores`` (the run's ``--cores``) refines the wall time."""
    wall = est.longest_cpu_hours
    if cores:
        wall = max(wall, est.cpu_hours / max(1, min(cores, est.jobs)))
    return (
        f"Estimated training: {format_hours(est.cpu_hours)} of CPU time, at least "
        f"{format_hours(wall)} of wall time (on one GPU: about {format_hours(est.gpu_hours)})."
    )


def plan_warning(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable[tuple[str, str]] | None = None,
    cores: int | None = None,
    threshold_hours: float = WARN_HOURS,
) -> str | None:
    """The warning for a local run that would train for long on the CPU
    (``long_cpu_training``), or None."""
    est = long_cpu_training(cfg, cuda_available, jobs, threshold_hours)
    if est is None:
        return None
    return "\n".join(
        [
            f"WARNING (plan check): the {est.preset!r} preset will train {est.jobs} job(s) on "
            "the CPU: no CUDA device is visible (torch.cuda.is_available() is False).",
            f"  {estimate_line(est, cores)}",
            "  Alternatives:",
            "    --config preset=quick              every table and figure on small data, "
            "about 6 min on 2 cores (reference/quick/run-info.txt)",
            "    a machine with a CUDA GPU          (device: auto uses it)",
            "    --workflow-profile profiles/slurm  the jobs on a SLURM cluster's GPU nodes",
            "  Ctrl-C stops the run; finished jobs are kept. (Estimate: fourdvarnet.plan, from "
            "the per-step times in fourdvarnet/step_timings.csv.)",
        ]
    )


def unnamed_preset_stop(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable[tuple[str, str]] | None = None,
    cores: int | None = None,
) -> str | None:
    """The message that stops a local run whose preset was not named (the default, ``paper``)
    and that would train for long on the CPU (``long_cpu_training``), or None. Naming the preset
    (``--config preset=...``) runs it, with the warning."""
    est = long_cpu_training(cfg, cuda_available, jobs)
    if est is None:
        return None
    return "\n".join(
        [
            f"STOPPED before any job (plan check): no preset was named, and the default "
            f"{est.preset!r} preset would train on this CPU (no CUDA device is visible).",
            f"  {estimate_line(est, cores)}",
            "  Name a preset to run:",
            "    snakemake --config preset=quick   every table and figure on small data "
            "(about 6 min on 2 cores, reference/quick/run-info.txt)",
            "    snakemake --config preset=cpu     Table 1 and Figures 2-3 at the paper's L63 "
            "size (about 83 min on 2 cores, reference/cpu/run-info.txt)",
            f"    snakemake --config preset={est.preset}   this run, as asked",
        ]
    )


def plan_line(cfg: dict) -> str:
    """One line for the start of any run, a dry run included: the preset and its training."""
    est = estimate_training(cfg)
    return (
        f"preset {est.preset!r}: {est.jobs} training job(s), about "
        f"{format_hours(est.cpu_hours)} of CPU training or {format_hours(est.gpu_hours)} on one "
        "GPU (fourdvarnet.plan)"
    )
