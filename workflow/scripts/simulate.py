"""Snakemake adapter: twin-experiment data of one system (fourdvarnet.pipeline.simulate)."""

from fourdvarnet.pipeline import setup_logging, simulate

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0])
simulate(sm.params.data, {split: sm.output[split] for split in ("train", "val", "test")})
