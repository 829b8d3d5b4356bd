# Learned variational data assimilation (Fablet et al., JAMES 2021): one DAG from the twin
# experiment data to Tables 1-2 and Figures 2-4.
#
#   snakemake --config preset=quick          # both tables and all figures, CPU, about 6 min
#   snakemake results/table1.csv             # the paper preset (GPU recommended)
#   snakemake --workflow-profile profiles/slurm ...   # on a SLURM cluster


from snakemake.utils import min_version

min_version("9.1.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
