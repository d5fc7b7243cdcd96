# fsseg benchmark workflow: every dataset × method × variant × fold × shot × seed of the config,
# then statistics, tables, plots and an HTML report. Rules live in workflow/rules/.
#   snakemake --cores all                                  (config/default.yaml, the synthetic default)
#   snakemake --cores all --configfile config/paper.yaml   (iSAID-5i + DLRSD, GPUs)
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
from snakemake.utils import min_version, validate

min_version("9.0")


# The default config only when none is given: a --configfile would otherwise be merged into it.
if not config:

    configfile: "config/default.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


check_evaluations()


rule all:
    input:
        all_report_targets(),
        all_evaluation_targets(),
    default_target: True
