rule figure:
    """Figures 2-4 of the paper, from the evaluation files of the rows they compare."""
    input:
        evals=figure_evals,
    output:
        pdf=report(
            f"{FIGURE_DIR}{{figure}}.pdf",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "pdf"},
        ),
        png=report(
            f"{FIGURE_DIR}{{figure}}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "png"},
        ),
    log:
        f"{TABLE_DIR}logs/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    localrule: True
    conda:
        "../../envs/plot.yaml"
    params:
        figure=lambda w: FIGURES[w.figure][0],
        labels=lambda w: [label for label, _ in figure_rows(w)],
        preset=PRESET,
        caption=CFG.get("caption", ""),
    script:
        "../scripts/figures.py"


rule training_figure:
    """The learned rows' validation R-score against optimiser steps and training seconds, with
    the paper's test values, the EnKS and the Bayes floor."""
    input:
        checkpoints=lambda w: [checkpoint_path(w.system, row) for row in learned_rows(w.system)],
        references=lambda w: [
            eval_path(w.system, row, SEEDS[0], "json") for row in reference_rows(w.system).values()
        ],
    output:
        pdf=report(
            f"{FIGURE_DIR}fig_training_{{system}}.pdf",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "fig_training_{system}", "format": "pdf"},
        ),
        png=report(
            f"{FIGURE_DIR}fig_training_{{system}}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "fig_training_{system}", "format": "png"},
        ),
    log:
        f"{TABLE_DIR}logs/fig_training_{{system}}.log",
    localrule: True
    conda:
        "../../envs/plot.yaml"
    params:
        rows=lambda w: learned_rows(w.system),
        references=lambda w: list(reference_rows(w.system)),
        preset=PRESET,
        caption=CFG.get("caption", ""),
    script:
        "../scripts/training_figure.py"


rule sweep_figure:
    """R-score against the observation set-up (config `sweep`): a CSV and a figure from the
    sweep's points, each a whole twin experiment of its own."""
    input:
        scores=sweep_scores,
    output:
        csv=f"{TABLE_DIR}sweep_{{system}}.csv",
        pdf=f"{FIGURE_DIR}sweep_{{system}}.pdf",
        png=f"{FIGURE_DIR}sweep_{{system}}.png",
    log:
        f"{TABLE_DIR}logs/sweep_{{system}}.log",
    localrule: True
    conda:
        "../../envs/plot.yaml"
    params:
        preset=PRESET,
        caption=CFG.get("caption", ""),
    script:
        "../scripts/sweep.py"


rule sweep:
    """The observation sweep of config `sweep` (`snakemake --config preset=quick -- sweep`)."""
    input:
        f"{TABLE_DIR}sweep_{SWEEP.get('system', 'l63')}.csv",
        f"{FIGURE_DIR}sweep_{SWEEP.get('system', 'l63')}.png",
    localrule: True
