"""Snakemake adapter: pre-train one GENN prior (fourdvarnet.pipeline.pretrain_genn)."""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log, pretrain_genn

sm = snakemake  # noqa: F821 (injected by Snakemake)
w = sm.wildcards
with job_log(sm.log[0], also_stderr=True, tag=f"pretrain {w.system}/seed{w.seed}"):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    pretrain_genn(
        w.system,
        int(w.seed),
        sm.input.train,
        sm.input.val,
        sm.params.model,
        sm.params.train,
        sm.output.prior,
        threads=sm.threads,
    )
