"""Snakemake adapter: twin-experiment data of one system (fourdvarnet.pipeline.simulate)."""

from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log, simulate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    simulate(sm.params.data, {split: sm.output[split] for split in ("train", "val", "test")})
