"""Plan check: what a run costs, said before the first job starts.

One estimate of a run's wall time: every job of the run priced from the configuration, then laid
on the run's job slots (``--cores``; one thread per job):

* training (``train.<system>``: epochs, batch size, the iteration schedule, ``max_seconds``;
  ``data.<system>``: ``n_train``, ``n_val``): steps times a measured per-step time, the ``step``
  lines of ``step_timings.csv`` (``fourdvarnet.step_timings``, shown in docs/performance.md),
  scaled linearly with the batch size and the solver iterations; a GENN row's step is the RK4
  step plus the GENN's extra, scaled by the GENN's multiply-adds (``model.<system>.genn``: width,
  hidden, kernel, pool, head) against the widths it was measured at (``MEASURED_GENN``); the
  direct row (no solver) as one solver iteration of the RK4 row; a validation pass every epoch
  (``n_val`` windows at ``val_n_iter`` iterations, priced as inference); at most the row's
  ``max_seconds``;
* GENN pre-training, the evaluation jobs (learned rows: inference over the test windows; FSGD and
  L-BFGS per window-iteration, the EnKS and the Bayes floor per window), the simulations, and a
  start-up for every job: ``RUN_PRICES``, measured on the reference runs
  (``reference/<preset>/run-info.txt``: each job's wall seconds; their configs beside them);
* the wall time on ``cores`` slots: the larger of the summed seconds over the slots and the
  longest chain of dependent jobs (simulate -> pre-train -> train -> evaluate -> table).

Euler priors are priced as RK4. The CPU numbers are one thread per job, eager; the GPU number is
the training steps on one H100 (the CUDA-graph path), without evaluation. It is an estimate to
tell minutes from hours from weeks; tests/test_plan.py holds it within 2x of the reference runs.
Only the standard library: the workflow imports this at DAG time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import row_train, system_train
from .step_timings import load, step_table

#: (system, prior kind) -> (seconds per step, batch size, solver iterations) it was measured at,
#: from step_timings.csv (the middle of each measured range).
CPU_STEP = step_table("cpu")
GPU_STEP = step_table("gpu")


def fixed_fractions(device: str) -> dict[str, float]:
    """prior kind -> the part of a ``step`` line's time that does not grow with the solver
    iterations, where step_timings.csv also holds an ``epoch`` line of the same device, system
    and prior at other iterations: a step's seconds taken as affine in the iterations through
    both (the epoch line brought to the step line's batch, linearly). A prior kind without such a
    pair is left out (priced linearly in the iterations)."""
    timings = load()
    steps = {(t.system, t.prior): t for t in timings if t.device == device and t.measure == "step"}
    out: dict[str, float] = {}
    for t in timings:
        step = steps.get((t.system, t.prior))
        if t.device != device or t.measure != "epoch" or not step or t.n_iter == step.n_iter:
            continue
        epoch = t.seconds * step.batch_size / t.batch_size
        per_iter = (epoch - step.seconds) / (t.n_iter - step.n_iter)
        out.setdefault(t.prior, min(max(1 - per_iter * step.n_iter / step.seconds, 0.0), 1.0))
    return out


#: device -> prior kind -> fixed part of a step (CPU: from the L63 step and epoch lines, used for
#: L96 too; GPU: none measured, linear in the iterations).
FIXED = {"cpu": fixed_fractions("cpu"), "gpu": fixed_fractions("gpu")}

#: The GENNs the step lines were measured with (benchmarks/bench_step.py at commit 3024b92,
#: upsampling by blocks, the only one then): the paper's widths.
MEASURED_GENN = {
    "l63": {"width": 60, "hidden": 30, "kernel": 11, "pool": 4, "head": False, "upsample": "block"},
    "l96": {"width": 50, "hidden": 50, "kernel": 11, "pool": 4, "head": True, "upsample": "block"},
}
#: The systems' layout for the convolutional modules (fourdvarnet.priors.LAYOUT, copied here to
#: keep torch out): L63 1-D over 3 channels, L96 2-D over one channel (40 x time).
LAYOUT = {"l63": (1, 3), "l96": (2, 1)}

#: Measured prices of the jobs that step_timings.csv does not time, in seconds. Sources: the job
#: wall seconds of reference/cpu/run-info.txt (preset cpu, commit 828eaaa) and
#: reference/quick/run-info.txt (preset quick, commit 6c844b9), both on 2 cores with 1 thread per
#: job and 2 jobs at a time, torch 2.13.0+cpu, eager; their configs are reference/<p>/config.yaml.
RUN_PRICES = {
    # per job: the fastest jobs (quick: evaluate l63 supervised-none-direct 1 s, the RK4 rows'
    # evaluations 2 s; cpu: 2 s)
    "start": 2.0,
    # per simulation at the paper's data size (cpu: simulate/l63, 20,000 steps, 6 s; quick: 5 s)
    "simulate": 6.0,
    # inference (a solve without backward) per window-iteration, as a fraction of a training
    # step's seconds per window-iteration: cpu evaluations of the learned rows (2,000 windows x 20
    # iterations) RK4 6, 5, 8, 6 s -> 1.06e-4 s against 0.063 / (32 x 5) = 3.9e-4 (0.27); GENN
    # 26, 22, 21, 23 s -> 5.3e-4 against 0.2565 / 160 = 1.6e-3 (0.33)
    "inference": 0.3,
    # GENN pre-training per window-epoch, as a fraction of a GENN training step's seconds per
    # window-iteration: cpu pretrain/l63 (10 epochs x 10,000 windows) 33 s -> 3.1e-4 s (0.19)
    "pretrain": 0.2,
}
#: Baselines per window-iteration (FSGD, L-BFGS: ``evaluate.<system>.<solver>.n_iter``) or per
#: window (EnKS at ``members``; Bayes at ``members`` x ``steps``), with what they were measured at,
#: from the same runs: (job seconds - start) / (windows x iterations).
BASELINE_PRICES = {
    # cpu: evaluate/l63/none-rk4-fsgd 413 s, 2,000 windows x 14,300 iterations
    ("l63", "fsgd"): 411 / (2000 * 14300),
    # quick: evaluate/l96/none-rk4-fsgd 14 s, 32 windows x 1,000 iterations
    ("l96", "fsgd"): 12 / (32 * 1000),
    # cpu: evaluate/l63/none-rk4-lbfgs 45 s, 2,000 windows x 194 iterations
    ("l63", "lbfgs"): 43 / (2000 * 194),
    # quick: evaluate/l96/none-rk4-lbfgs 15 s, 32 windows x 300 iterations
    ("l96", "lbfgs"): 13 / (32 * 300),
    # cpu: evaluate/l63/none-rk4-enks 13 s, 2,000 windows, 50 members (per window and member)
    ("l63", "enks"): 11 / 2000 / 50,
    # quick: evaluate/l96/none-rk4-enks 6 s, 32 windows, 100 members
    ("l96", "enks"): 4 / 32 / 100,
    # cpu: evaluate/l63/none-rk4-bayes 122 s, 2,000 windows, a bank of 2,000 x 5,000 steps (per
    # window and bank step)
    ("l63", "bayes"): 120 / 2000 / (2000 * 5000),
}

#: Above this many hours of wall time on the run's cores, a local run that trains on the CPU
#: gets a warning (a run whose preset was not named stops).
WARN_HOURS = 2.0

#: A job of a run: its rule and wildcards (system, row, seed where the rule has them).
Job = tuple[str, dict]


@dataclass
class TrainingEstimate:
    """Training cost of a set of jobs, in hours of one CPU core / one GPU."""

    preset: str
    jobs: int
    cpu_hours: float
    gpu_hours: float
    longest_cpu_hours: float  # the longest single job on the CPU (a lower bound on wall time)


@dataclass
class RunEstimate:
    """Cost of a run's jobs: CPU seconds summed, and the wall time on ``cores`` job slots."""

    preset: str
    jobs: int
    training_jobs: int
    cores: int
    cpu_hours: float  # every job, one core each
    wall_hours: float  # on ``cores`` slots
    gpu_training_hours: float  # the training steps on one GPU

    def line(self) -> str:
        gpu = (
            f"; the training on one GPU: {about(self.gpu_training_hours)}"
            if self.training_jobs
            else ""
        )
        return (
            f"{about(self.wall_hours)} of wall time on {self.cores} core(s) "
            f"({self.jobs} job(s), {self.training_jobs} training; "
            f"{format_hours(self.cpu_hours)} of CPU time{gpu})"
        )


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


def preset_jobs(cfg: dict) -> list[Job]:
    """Every job of a resolved config's default target (the workflow's DAG from scratch):
    simulations, GENN pre-trainings, trainings, evaluations, tables and figures."""
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    jobs: list[Job] = []
    for system, rows in cfg.get("experiments", {}).items():
        if not rows:
            continue
        jobs.append(("simulate", {"system": system}))
        learned = [r for r in rows if not r.startswith("none-")]
        if any(r.split("-")[1] == "genn" for r in learned):
            jobs += [("pretrain_genn", {"system": system, "seed": s}) for s in seeds]
        for row in rows:
            row_seeds = seeds if row in learned else seeds[:1]
            w = [{"system": system, "row": row, "seed": s} for s in row_seeds]
            jobs += [("train", x) for x in w if row in learned]
            jobs += [("evaluate", x) for x in w]
        jobs.append(("table", {"system": system}))
        if learned:
            jobs.append(("training_figure", {"system": system}))
    figures = {"fig2": "l63", "fig3": "l63", "fig4": "l96"}
    jobs += [
        ("figure", {"system": system})
        for fig, system in figures.items()
        if cfg.get("experiments", {}).get(system) and (cfg.get("figures") or {}).get(fig)
    ]
    return jobs


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


def genn_macs(system: str, genn: dict) -> float:
    """Multiply-adds of a GENN (fourdvarnet.priors.GENN) per full-resolution position: the
    zero-centre convolution, the 1x1 layers and the bilinear block of each branch (the coarse one
    on ``pool`` times fewer positions), the upsampling and the output layer."""
    dims, channels = LAYOUT.get(system, LAYOUT["l96"])
    width, hidden = int(genn.get("width", 60)), int(genn.get("hidden", 30))
    kernel, pool = int(genn.get("kernel", 11)), int(genn.get("pool", 4))
    head = bool(genn.get("head", False))
    cin = channels if dims == 1 else 1
    mid = hidden if head else cin

    def branch(cout: int) -> int:
        return cin * width * kernel**dims + width * hidden + 3 * hidden * hidden + 2 * hidden * cout

    up = hidden * mid / (pool if genn.get("upsample", "linear") == "linear" else 1)
    return branch(mid) + branch(hidden) / pool + up + (hidden * cin if head else 0)


def genn_scale(cfg: dict, system: str) -> float:
    """A GENN's compute relative to the one its step line was measured with (1 without a
    ``model.<system>.genn`` in ``cfg``)."""
    genn = ((cfg.get("model") or {}).get(system) or {}).get("genn")
    if not genn or system not in MEASURED_GENN:
        return 1.0
    return genn_macs(system, genn) / genn_macs(system, MEASURED_GENN[system])


def step_price(cfg: dict, system: str, prior: str, table: dict) -> tuple[float, int, int]:
    """(seconds per step, batch, iterations) of a row's prior on ``table``'s device: the RK4
    line, or for a GENN the RK4 line plus the GENN's extra scaled by its compute."""
    if (system, "ode") not in table:  # a system without measurements: price it as the dearer L96
        system = "l96"
    ode = table[(system, "ode")]
    if prior != "genn":
        return ode
    seconds, batch, n_iter = table[(system, "genn")]
    ode_seconds = ode[0] * (batch / ode[1]) * (n_iter / ode[2])  # at the GENN line's sizes
    return ode_seconds + (seconds - ode_seconds) * genn_scale(cfg, system), batch, n_iter


def _window_iteration(cfg: dict, system: str, prior: str, table: dict) -> float:
    seconds, batch, n_iter = step_price(cfg, system, prior, table)
    return seconds / (batch * n_iter)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """As fourdvarnet.training.loop.steps_per_epoch (equal-size batches)."""
    return n // batch_size if n > batch_size else 1


def job_seconds(
    cfg: dict, system: str, row: str, table: dict, validation: bool = False, capped: bool = True
) -> float:
    """Seconds of one training job's steps, priced with ``table`` (CPU_STEP or GPU_STEP); with
    ``validation`` its validation passes (priced as CPU inference); at most the row's time
    budget ``max_seconds`` (``capped``). No start-up."""
    prior = row.split("-")[1]
    tcfg = row_train(cfg["train"][system], row)
    data = cfg["data"][system]
    n_train = int(data.get("n_train", 1))
    batch = min(int(tcfg.get("batch_size", 1)), n_train)
    epochs = int(tcfg.get("epochs", 1))
    seconds, ref_batch, ref_iter = step_price(cfg, system, prior, table)
    if prior == "none":  # the direct row, no solver: as one solver iteration, no fixed part
        scale = 1 / ref_iter
    else:
        kind = "genn" if prior == "genn" else "ode"
        fixed = FIXED["cpu" if table is CPU_STEP else "gpu"].get(kind, 0.0)
        scale = fixed + (1 - fixed) * mean_iterations(tcfg) / ref_iter
    steps = steps_per_epoch(n_train, batch) * epochs
    estimate = steps * seconds * (batch / ref_batch) * scale
    if validation:
        val_iter = 1 if prior == "none" else int(tcfg.get("val_n_iter", 20))
        per = _window_iteration(cfg, system, prior, CPU_STEP) * RUN_PRICES["inference"]
        estimate += epochs * int(data.get("n_val", 0)) * val_iter * per
    budget = float(tcfg.get("max_seconds") or 0)  # a job stops once its time budget is spent
    return min(estimate, budget) if (budget and capped) else estimate


def evaluate_seconds(cfg: dict, system: str, row: str) -> float:
    """CPU seconds of one evaluation job (no start-up)."""
    scheme, prior, solver = row.split("-")
    ecfg = (cfg.get("evaluate") or {}).get(system) or {}
    n_test = int(cfg["data"][system].get("n_test", 1))
    if scheme != "none":  # a learned row: a solve of the test windows
        n_iter = 1 if prior == "none" else int(ecfg.get("n_iter", 20))
        per = _window_iteration(cfg, system, prior, CPU_STEP) * RUN_PRICES["inference"]
        return n_test * n_iter * per
    sub = ecfg.get(solver) or {}
    price = BASELINE_PRICES.get((system, solver)) or BASELINE_PRICES.get(("l96", solver), 0.0)
    if solver in ("fsgd", "lbfgs"):
        return n_test * int(sub.get("n_iter", 1)) * price
    if solver == "enks":
        return n_test * int(sub.get("members", 50)) * price
    if solver == "bayes":
        return n_test * int(sub.get("members", 2000)) * int(sub.get("steps", 5000)) * price
    if solver == "fixed_point":  # projections by the prior, priced as FSGD iterations
        fsgd = BASELINE_PRICES.get((system, "fsgd"), BASELINE_PRICES[("l96", "fsgd")])
        return n_test * int(ecfg.get("fixed_point_iter", 100)) * fsgd
    return 0.0


def pretrain_seconds(cfg: dict, system: str) -> float:
    """CPU seconds of one GENN pre-training (no start-up)."""
    tcfg = system_train(cfg["train"][system])
    windows = int(cfg["data"][system].get("n_train", 1)) * int(tcfg.get("pretrain_epochs", 20))
    return windows * _window_iteration(cfg, system, "genn", CPU_STEP) * RUN_PRICES["pretrain"]


def run_job_seconds(cfg: dict, job: Job) -> float:
    """CPU seconds of one job of the run, its start-up included."""
    rule, w = job
    seconds = RUN_PRICES["start"]
    if rule == "simulate":
        seconds = RUN_PRICES["simulate"]
    elif rule == "pretrain_genn":
        seconds += pretrain_seconds(cfg, w["system"])
    elif rule == "train":
        seconds += job_seconds(cfg, w["system"], w["row"], CPU_STEP, validation=True)
    elif rule == "evaluate":
        seconds += evaluate_seconds(cfg, w["system"], w["row"])
    return seconds


def _as_jobs(jobs: Iterable) -> list[Job]:
    """Jobs as (rule, wildcards); a (system, row) pair is that row's training job."""
    out = []
    for job in jobs:
        if isinstance(job[1], dict):
            out.append((str(job[0]), dict(job[1])))
        else:
            out.append(("train", {"system": job[0], "row": job[1]}))
    return out


def longest_chain(cfg: dict, jobs: list[Job], seconds: list[float]) -> float:
    """The longest chain of dependent jobs among ``jobs``: a simulation, its GENN pre-training,
    a training, its evaluation, then a table or figure (one start-up)."""
    by_key: dict[tuple, float] = {}
    for (rule, w), s in zip(jobs, seconds, strict=True):
        key = (rule, w.get("system"), w.get("row"), str(w.get("seed", "")))
        by_key[key] = max(by_key.get(key, 0.0), s)
    last = RUN_PRICES["start"] if any(r in ("table", "figure") for r, _ in jobs) else 0.0
    longest = max(seconds, default=0.0)
    for rule, w in jobs:
        if rule not in ("train", "evaluate"):
            continue
        system, row, seed = w.get("system"), w.get("row"), str(w.get("seed", ""))
        chain = by_key.get(("simulate", system, None, ""), 0.0)
        if row.split("-")[1] == "genn":
            chain += by_key.get(("pretrain_genn", system, None, seed), 0.0)
        chain += by_key.get(("train", system, row, seed), 0.0)
        chain += by_key.get(("evaluate", system, row, seed), 0.0)
        longest = max(longest, chain + last)
    return longest


def estimate_run(cfg: dict, jobs: Iterable | None = None, cores: int | None = None) -> RunEstimate:
    """The cost of ``jobs`` ((rule, wildcards) pairs, or (system, row) training pairs; default:
    every job of the preset, ``preset_jobs``) on ``cores`` job slots (default 1)."""
    jobs = preset_jobs(cfg) if jobs is None else _as_jobs(jobs)
    cores = max(1, int(cores or 1))
    seconds = [run_job_seconds(cfg, job) for job in jobs]
    total = sum(seconds)
    wall = max(total / min(cores, max(len(jobs), 1)), longest_chain(cfg, jobs, seconds))
    train = [(w["system"], w["row"]) for rule, w in jobs if rule == "train"]
    gpu = sum(job_seconds(cfg, system, row, GPU_STEP) for system, row in train)
    return RunEstimate(
        preset=str(cfg.get("preset", "?")),
        jobs=len(jobs),
        training_jobs=len(train),
        cores=cores,
        cpu_hours=total / 3600,
        wall_hours=wall / 3600,
        gpu_training_hours=gpu / 3600,
    )


def estimate_training(cfg: dict, jobs: Iterable[tuple[str, str]] | None = None) -> TrainingEstimate:
    """Training steps of ``jobs`` ((system, row) pairs, one per seed; default: every learned row
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
    if hours < 1 / 60:
        return "under 1 min"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def about(hours: float) -> str:
    text = format_hours(hours)
    return text if text.startswith("under") else f"about {text}"


def long_cpu_run(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable | None = None,
    cores: int | None = None,
    threshold_hours: float = WARN_HOURS,
) -> RunEstimate | None:
    """The estimate of a run that trains on the CPU and would take long, or None: no training
    job, at most ``threshold_hours`` of wall time on ``cores``, or CUDA (``cuda_available``
    defaults to ``torch.cuda.is_available()``)."""
    est = estimate_run(cfg, jobs, cores)
    if est.training_jobs == 0 or est.wall_hours <= threshold_hours:
        return None
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return None if cuda_available else est


def estimate_line(est: RunEstimate) -> str:
    """The estimate of a run in one line."""
    return f"Estimated run: {est.line()}."


def plan_warning(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable | None = None,
    cores: int | None = None,
    threshold_hours: float = WARN_HOURS,
) -> str | None:
    """The warning for a local run that would train for long on the CPU (``long_cpu_run``),
    or None."""
    est = long_cpu_run(cfg, cuda_available, jobs, cores, threshold_hours)
    if est is None:
        return None
    return "\n".join(
        [
            f"WARNING (plan check): the {est.preset!r} preset will train {est.training_jobs} "
            "job(s) on the CPU: no CUDA device is visible (torch.cuda.is_available() is False).",
            f"  {estimate_line(est)}",
            "  Alternatives:",
            "    --config preset=quick              every table and figure on small data, "
            "about 6 min on 2 cores (reference/quick/run-info.txt)",
            "    a machine with a CUDA GPU          (device: auto uses it)",
            "    --workflow-profile profiles/slurm  the jobs on a SLURM cluster's GPU nodes",
            "  Ctrl-C stops the run; finished jobs are kept. (Estimate: fourdvarnet.plan, from "
            "fourdvarnet/step_timings.csv and the reference runs' job times.)",
        ]
    )


def unnamed_preset_stop(
    cfg: dict,
    cuda_available: bool | None = None,
    jobs: Iterable | None = None,
    cores: int | None = None,
) -> str | None:
    """The message that stops a local run whose preset was not named (the default, ``paper``)
    and that would train for long on the CPU (``long_cpu_run``), or None. Naming the preset
    (``--config preset=...``) runs it, with the warning."""
    est = long_cpu_run(cfg, cuda_available, jobs, cores)
    if est is None:
        return None
    return "\n".join(
        [
            f"STOPPED before any job (plan check): no preset was named, and the default "
            f"{est.preset!r} preset would train on this CPU (no CUDA device is visible).",
            f"  {estimate_line(est)}",
            "  Name a preset to run:",
            "    snakemake --config preset=quick   every table and figure on small data "
            "(about 6 min on 2 cores, reference/quick/run-info.txt)",
            "    snakemake --config preset=cpu     both tables at the paper's data sizes: "
            "Table 1 about 2 h on 2 cores (reference/cpu/run-info.txt), Table 2 about 2.2 h "
            "(an estimate); -- results/table1.csv or results/table2.csv builds one",
            f"    snakemake --config preset={est.preset}   this run, as asked",
        ]
    )


def plan_line(cfg: dict, cores: int | None = None) -> str:
    """One line for a dry run: every output of the preset, from scratch."""
    est = estimate_run(cfg, cores=cores)
    return (
        f"preset {est.preset!r}: {est.training_jobs} training job(s), {est.line()}, for every "
        "output of the preset from scratch (fourdvarnet.plan)"
    )


def run_line(est: RunEstimate) -> str:
    """One line for the start of a run: its jobs (those the DAG will run)."""
    return f"Plan: preset {est.preset!r}, the jobs of this run: {est.line()} (fourdvarnet.plan)"
