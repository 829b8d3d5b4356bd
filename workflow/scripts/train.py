"""Snakemake adapter: train one table row (fourdvarnet.pipeline.train_row)."""

from fourdvarnet.pipeline import setup_logging, train_row

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0])
w = sm.wildcards
train_row(
    w.row,
    w.system,
    int(w.seed),
    sm.input.train,
    sm.input.val,
    sm.params.model,
    sm.params.train,
    sm.output.checkpoint,
    threads=sm.threads,
)
