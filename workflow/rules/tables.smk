rule table:
    """Table 1 (Lorenz-63) or Table 2 (Lorenz-96): our scores beside the paper's."""
    input:
        scores=table_scores,
    output:
        report(
            f"{TABLE_DIR}{{table}}.csv",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        pairs=f"{TABLE_DIR}pairs_{{table}}.csv",
    log:
        f"{TABLE_DIR}logs/{{table}}.log",
    wildcard_constraints:
        table="table1|table2",
    localrule: True
    conda:
        "../../envs/torch.yaml"
    params:
        system=lambda w: TABLES[w.table],
        preset=PRESET,
        caption=CFG.get("caption", ""),
    script:
        "../scripts/table.py"
