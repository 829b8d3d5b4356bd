"""Snakemake adapter: score one table row on the test split (fourdvarnet.pipeline.evaluate_row)."""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import evaluate_row, job_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
w = sm.wildcards
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    evaluate_row(
        w.row,
        w.system,
        int(w.seed),
        sm.input.test,
        sm.params.model,
        sm.params.evaluate,
        sm.output.recon,
        sm.output.scores,
        checkpoint=sm.input.checkpoint or None,
        threads=sm.threads,
        run=sm.params.run,
        preset=sm.params.preset,
        train_path=sm.input.train,
    )
