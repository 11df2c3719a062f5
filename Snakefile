# LUS scoring workflow: frames -> split -> CNNs -> confidence -> similarity -> evaluation -> report.
# See docs/architecture.md for the files each step reads and writes.
import os

from snakemake.utils import min_version

min_version("9.0")


# beside the Snakefile, not in the working directory: a run from any folder (--directory, `lus run`)
# lays its --configfile over the same defaults
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/extract.smk"
include: "rules/split.smk"
include: "rules/embed.smk"
include: "rules/train.smk"
include: "rules/confidence.smk"
include: "rules/similarity.smk"
include: "rules/video.smk"
include: "rules/evaluate.smk"
include: "rules/gradcam.smk"


# a profile's --set-resources / --set-threads for a step reach every copy of its rule
apply_step_settings(workflow, STEP_OF_RULE)


rule all:
    input:
        final_targets(),
    default_target: True
