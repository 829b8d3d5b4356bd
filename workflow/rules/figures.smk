rule figure:
    """Figures 2-4 of the paper, from the evaluation files of the rows they compare."""
    input:
        evals=figure_evals,
    output:
        pdf=report(
            "figures/{figure}.pdf",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "pdf"},
        ),
        png=report(
            "figures/{figure}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "png"},
        ),
    log:
        "results/logs/{figure}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    localrule: True
    conda:
        "../../envs/plot.yaml"
    params:
        figure=lambda w: FIGURES[w.figure][0],
        labels=lambda w: [label for label, _ in figure_rows(w)],
        preset=PRESET,
    script:
        "../scripts/figures.py"
