"""Snakemake adapter: twin-experiment data of one system (fourdvarnet.pipeline.simulate)."""

from fourdvarnet.pipeline import job_log, simulate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    simulate(sm.params.data, {split: sm.output[split] for split in ("train", "val", "test")})
