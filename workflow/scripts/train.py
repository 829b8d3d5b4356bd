"""Snakemake adapter: train one table row (fourdvarnet.pipeline.train_row).

Its log lines (one per epoch) also go to stderr, which a local run shows on the console.
"""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log, train_row

sm = snakemake  # noqa: F821 (injected by Snakemake)
w = sm.wildcards
with job_log(sm.log[0], also_stderr=True, tag=f"train {w.system}/{w.row}/seed{w.seed}"):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
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
        pretrained=sm.input.get("prior"),
    )
