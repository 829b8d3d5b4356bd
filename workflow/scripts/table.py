"""Snakemake adapter: gather the score files of one table (fourdvarnet.tables.write_table)."""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log
from fourdvarnet.tables import write_pairs, write_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    write_table(
        sm.input.scores,
        sm.params.system,
        sm.output[0],
        preset=sm.params.preset,
        caption=sm.params.caption,
    )
    write_pairs(sm.input.scores, sm.params.system, sm.output.pairs)
