"""Snakemake adapter: the observation sweep's CSV and figure (fourdvarnet.sweep.write_sweep)."""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log
from fourdvarnet.sweep import write_sweep

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    write_sweep(
        sm.input.scores,
        sm.wildcards.system,
        sm.output.csv,
        sm.output.pdf,
        sm.output.png,
        preset=sm.params.preset,
        caption=sm.params.caption,
    )
