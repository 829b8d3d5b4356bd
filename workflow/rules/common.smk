# Configuration, wildcards and input functions shared by the rules.

import os
import sys

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fourdvarnet.config import (
    ConfigError,
    canonical,
    drop_absent_figure_rows,
    check_train_rows,
    deep_merge,
    resolve_preset,
    row_train,
    schema_error,
    system_train,
)
from fourdvarnet.data import REBUILD_OPTIONS
from fourdvarnet.workflow_config import (
    point_data,
    rebuild_options,
    sweep_part,
    user_config,
)
from fourdvarnet.plan import (
    CPU_STEP,
    estimate_run,
    job_seconds,
    plan_line,
    plan_warning,
    run_line,
    unnamed_preset_stop,
)


def validate_config(cfg, where):
    """The schema check, failing with one line naming the key instead of the whole schema."""
    try:
        validate(cfg, schema="../schemas/config.schema.yaml")
    except WorkflowError as e:
        if not isinstance(e.__context__, jsonschema.ValidationError):
            raise
        raise ConfigError(schema_error(e.__context__, where)) from None


# The user's values (--configfile files, then --config with its nested strings read as YAML)
# win over the preset, key by key.
USER_CONFIG = user_config(
    workflow.config_settings.overwrite_config, workflow.config_settings.config
)
config.update(deep_merge(config, USER_CONFIG))
# The jobs' advice for an unreadable input repeats the user's own config options.
os.environ[REBUILD_OPTIONS] = rebuild_options(
    workflow.config_settings.config_args, workflow.config_settings.configfiles
)
# Refuse a bad configuration before any job: once as given (types, ranges, names, the preset),
# once with the preset applied (the values the jobs will see).
validate_config(config, "as given")
CFG = resolve_preset(config, overrides=USER_CONFIG)
validate_config(CFG, f"with preset {CFG.get('preset')!r} applied")
# Rules pass these sub-trees as params: sorted keys, so that key order alone never reruns a job.
for section in ("data", "model", "train", "evaluate"):
    CFG[section] = canonical(CFG[section])

PRESET = CFG["preset"]
SEEDS = [int(seed) for seed in CFG["seeds"]]  # --config gives strings
# Where this run writes. The default run: results/<preset>/, its tables in results/ and its
# figures in figures/ (the last preset run's). A named run (--config run=NAME): everything below
# results/runs/NAME/<preset>/, tables and figures included, so it never touches another's files.
RUN = str(CFG.get("run") or "")
ROOT = f"runs/{RUN}/{PRESET}" if RUN else PRESET  # results/{ROOT}/: data, models, eval, logs
TABLE_DIR = f"results/{ROOT}/" if RUN else "results/"
FIGURE_DIR = f"results/{ROOT}/figures/" if RUN else "figures/"
SWEEP = CFG.get("sweep") or {}
_CHANGED = sorted({"data", "model", "train", "evaluate"} & set(USER_CONFIG))
if workflow.is_main_process and _CHANGED and not RUN:
    print(
        f"note: your config changes {', '.join(_CHANGED)} of the default run: its results in "
        f"results/{PRESET}/ are rebuilt with them; --config run=NAME keeps them apart "
        "(README, 'Your own experiment')",
        file=sys.stderr,
    )
TABLES = {"table1": "l63", "table2": "l96"}
FIGURES = {
    "fig2_energy_pathways": ("fig2", "l63"),
    "fig3_l63_examples": ("fig3", "l63"),
    "fig4_l96": ("fig4", "l96"),
}
for line in drop_absent_figure_rows(CFG, dict(FIGURES.values())):
    if workflow.is_main_process:  # not again in every job's process
        print(line, file=sys.stderr)
check_train_rows(CFG)


def dry_run(argv=None):
    """Whether this is a dry run (-n, --dry-run, --dryrun, or -n among short flags: -pn).
    Snakemake 9 reads the Snakefile before it knows its executor (workflow.dryrun is False
    then), so the command line is all there is."""
    argv = sys.argv if argv is None else argv
    long = ("--dry-run", "--dryrun")
    short = (a[1:] for a in argv if a.startswith("-") and not a.startswith("--"))
    return any(a in long for a in argv) or any(s.isalpha() and "n" in s for s in short)


# A dry run says what every output of the preset costs; a real run says what its own jobs cost,
# once, in the onstart hook (warn_if_cpu_training), which dry runs do not run.
if workflow.is_main_process and (workflow.dryrun or dry_run()):
    print(plan_line(CFG, workflow.resource_settings.cores), file=sys.stderr)


wildcard_constraints:
    # results/{preset}/...: a preset, under a named run, or a point of the observation sweep
    preset=r"(runs/[A-Za-z0-9_-]+/)?[A-Za-z0-9_]+(/sweep/every[0-9]+-noise[0-9.]+)?",
    system="l63|l96",
    row=r"(none|unsupervised|supervised)-(rk4|euler|genn|none)-(fsgd|lbfgs|enks|bayes|fixed_point|conv|lstm|direct)",
    seed=r"\d+",
    split="train|val|test",


def row_seeds(row):
    """Seeds of a table row: learned rows get every seed, the deterministic baselines one."""
    return SEEDS if not row.startswith("none-") else SEEDS[:1]


def eval_path(system, row, seed, ext):
    return f"results/{ROOT}/eval/{system}/{row}/seed{seed}.{ext}"


def table_scores(wildcards):
    system = TABLES[wildcards.table]
    return [
        eval_path(system, row, seed, "json")
        for row in CFG["experiments"].get(system, [])
        for seed in row_seeds(row)
    ]


def figure_rows(wildcards):
    """(label, row) pairs drawn in a figure."""
    fig, _ = FIGURES[wildcards.figure]
    return list(CFG["figures"][fig].items())


def figure_evals(wildcards):
    _, system = FIGURES[wildcards.figure]
    return [eval_path(system, row, SEEDS[0], "nc") for _, row in figure_rows(wildcards)]


def learned_rows(system):
    return [r for r in CFG["experiments"].get(system, []) if not r.startswith("none-")]


def reference_rows(system):
    """The baselines drawn as horizontal lines in the training figure: label -> row."""
    named = {"EnKS": "none-rk4-enks", "Bayes floor": "none-rk4-bayes"}
    return {k: r for k, r in named.items() if r in CFG["experiments"].get(system, [])}


def checkpoint_path(system, row, seed=None):
    seed = SEEDS[0] if seed is None else seed
    return f"results/{ROOT}/models/{system}/{row}/seed{seed}.pt"


def train_priority(wildcards):
    """Long training jobs first (their estimated CPU seconds), so that no core idles at the end
    while one long job still runs."""
    return int(job_seconds(CFG, wildcards.system, wildcards.row, CPU_STEP))


def checkpoint_for(wildcards):
    """Learned rows are evaluated from their checkpoint; baselines need none."""
    if wildcards.row.startswith("none-"):
        return []
    return f"results/{wildcards.preset}/models/{wildcards.system}/{wildcards.row}/seed{wildcards.seed}.pt"


def train_inputs(wildcards):
    """A row's training and validation files, and for a GENN row its seed's pre-trained prior."""
    data = f"results/{wildcards.preset}/data/{wildcards.system}"
    inputs = {"train": f"{data}_train.nc", "val": f"{data}_val.nc"}
    if wildcards.row.split("-")[1] == "genn":
        inputs["prior"] = (
            f"results/{wildcards.preset}/models/{wildcards.system}/genn-pretrained/"
            f"seed{wildcards.seed}.pt"
        )
    return inputs


def data_config(wildcards):
    """The data config of a system, with a sweep point's observation set-up where the path is
    one."""
    return point_data(CFG["data"][wildcards.system], wildcards.preset)


def sweep_scores(wildcards):
    """The score files of every point and row of the sweep (first seed)."""
    return [
        f"results/{sweep_part(ROOT, e, v)}/eval/{SWEEP['system']}/{row}/seed{SEEDS[0]}.json"
        for e in SWEEP["every"]
        for v in SWEEP["noise_var"]
        for row in SWEEP["rows"]
    ]


def all_outputs():
    """Tables and figures of every system with table rows."""
    systems = [system for system, rows in CFG["experiments"].items() if rows]
    tables = [f"{TABLE_DIR}{t}.csv" for t, system in TABLES.items() if system in systems]
    figures = [
        f"{FIGURE_DIR}{name}.{ext}"
        for name, (fig, system) in FIGURES.items()
        if system in systems and CFG["figures"].get(fig)
        for ext in ("pdf", "png")
    ]
    curves = [
        f"{FIGURE_DIR}fig_training_{system}.{ext}"
        for system in systems
        if learned_rows(system)
        for ext in ("pdf", "png")
    ]
    return tables + figures + curves


def warn_if_cpu_training():
    """Plan check (fourdvarnet.plan): one line on stderr with the estimate of this local run's
    jobs on its cores; a warning with it instead when the run would train for hours on the CPU;
    and a run whose preset was not named stops instead, before any job. It runs as the onstart
    hook: only then does Snakemake 9 know the executor and the DAG (workflow.local_exec is False
    for SLURM and other executor plugins, whose jobs run elsewhere), and hooks run neither in dry
    runs nor in the jobs an executor spawns (--no-hooks)."""
    if not (workflow.is_main_process and workflow.local_exec) or workflow.touch:
        return
    try:
        jobs = [(job.rule.name, dict(job.wildcards_dict)) for job in workflow.dag.needrun_jobs()]
    except Exception:  # the DAG's internals: fall back to every job of the preset
        jobs = None
    cores = workflow.resource_settings.cores
    if "preset" not in USER_CONFIG:  # the default preset, not asked for: stop if it is long
        stop = unnamed_preset_stop(CFG, jobs=jobs, cores=cores)
        if stop:
            raise WorkflowError(stop)
    message = plan_warning(CFG, jobs=jobs, cores=cores)
    if not message and jobs != []:
        message = run_line(estimate_run(CFG, jobs, cores))
    if message:
        print(message, file=sys.stderr, flush=True)


onstart:
    warn_if_cpu_training()


def making_report(argv=None):
    """Whether this Snakemake only makes a report (``--report [FILE]``, or ``--reporter`` with a
    plugin's options). Snakemake 9 reads the Snakefile before it acts and tells it nothing of a
    report (``Workflow.create_report`` comes after), so the command line is all there is.
    ``--report-after-run`` runs the jobs first, which rewrite the tables of this preset: no check
    is needed then."""
    argv = sys.argv if argv is None else argv
    flags = ("--report", "--reporter")
    asked = any(a in flags or a.startswith(tuple(f"{f}=" for f in flags)) for a in argv)
    return asked and "--report-after-run" not in argv


def report_preset_mismatches():
    """Lines naming each table on disk (results/table*.csv, rewritten by every run whatever its
    preset) whose ``preset`` column is not this run's preset. A missing table is left to
    Snakemake, which names it."""
    import csv
    from pathlib import Path

    lines = []
    for table in all_outputs():
        if not (table.startswith(f"{TABLE_DIR}table") and Path(table).is_file()):
            continue
        with open(table, newline="") as f:
            held = sorted({row.get("preset") or "(none)" for row in csv.DictReader(f)})
        if held == [PRESET]:
            continue
        line = f"{table} holds preset {', '.join(map(repr, held)) or '(no rows)'}, not {PRESET!r}"
        line += f": run `snakemake --config preset={PRESET}` first"
        if len(held) == 1 and held[0] != "(none)":
            line += f", or make the report with --config preset={held[0]}"
        lines.append(line)
    return lines


if workflow.is_main_process and making_report():
    _stale = report_preset_mismatches()
    if _stale:
        raise WorkflowError(
            f"no report for preset {PRESET!r}: the report shows results/table*.csv and figures/ "
            "as the last run left them, and\n  " + "\n  ".join(_stale)
        )
