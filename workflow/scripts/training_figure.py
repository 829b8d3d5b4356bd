"""Snakemake adapter: the training-curves figure of a system (fourdvarnet.figures.fig_training)."""

from fourdvarnet import figures
from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log
from fourdvarnet.tables import PAPER

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    figures.fig_training(
        dict(zip(sm.params.rows, sm.input.checkpoints, strict=True)),
        dict(zip(sm.params.references, sm.input.references, strict=True)),
        {row: scores[0] for row, scores in PAPER.get(sm.wildcards.system, {}).items()},
        sm.output.pdf,
        sm.output.png,
        preset=sm.params.preset,
        caption=sm.params.caption,
    )
