# Configuration, wildcards and input functions shared by the rules.

from snakemake.utils import validate

from fourdvarnet.config import resolve_preset

# Refuse a bad configuration before any job: once as given (types, ranges, names, the preset),
# once with the preset applied (the values the jobs will see).
validate(config, schema="../schemas/config.schema.yaml")
CFG = resolve_preset(config)
validate(CFG, schema="../schemas/config.schema.yaml")

PRESET = CFG["preset"]
SEEDS = [int(seed) for seed in CFG["seeds"]]  # --config gives strings
TABLES = {"table1": "l63", "table2": "l96"}
FIGURES = {
    "fig2_energy_pathways": ("fig2", "l63"),
    "fig3_l63_examples": ("fig3", "l63"),
    "fig4_l96": ("fig4", "l96"),
}


wildcard_constraints:
    preset=r"[A-Za-z0-9_]+",
    system="l63|l96",
    row=r"(none|unsupervised|supervised)-(rk4|euler|genn)-(fsgd|fixed_point|conv|lstm)",
    seed=r"\d+",
    split="train|val|test",


def row_seeds(row):
    """Seeds of a table row: learned rows get every seed, the deterministic baselines one."""
    return SEEDS if not row.startswith("none-") else SEEDS[:1]


def eval_path(system, row, seed, ext):
    return f"results/{PRESET}/eval/{system}/{row}/seed{seed}.{ext}"


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


def checkpoint_for(wildcards):
    """Learned rows are evaluated from their checkpoint; baselines need none."""
    if wildcards.row.startswith("none-"):
        return []
    return f"results/{wildcards.preset}/models/{wildcards.system}/{wildcards.row}/seed{wildcards.seed}.pt"


def all_outputs():
    tables = [f"results/{t}.csv" for t, system in TABLES.items() if system in CFG["experiments"]]
    figures = [
        f"figures/{name}.{ext}"
        for name, (fig, system) in FIGURES.items()
        if system in CFG["experiments"]
        for ext in ("pdf", "png")
    ]
    return tables + figures
