"""Snakemake adapter: twin-experiment data of one system (fourdvarnet.pipeline.simulate)."""

from fourdvarnet.pipeline import die_with_parent, job_log, simulate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    simulate(sm.params.data, {split: sm.output[split] for split in ("train", "val", "test")})
