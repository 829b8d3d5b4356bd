"""Snakemake adapter: render one of Figures 2-4 (fourdvarnet.figures)."""

from fourdvarnet import figures
from fourdvarnet.jobs import die_with_parent
from fourdvarnet.pipeline import job_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    die_with_parent()  # a killed Snakemake takes this job with it (Linux)
    render = getattr(figures, sm.params.figure)
    render(
        dict(zip(sm.params.labels, sm.input.evals, strict=True)),
        sm.output.pdf,
        sm.output.png,
        preset=sm.params.preset,
        caption=sm.params.caption,
    )
