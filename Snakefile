# LUS scoring workflow: frames -> split -> CNNs -> confidence -> similarity -> evaluation -> report.
# See docs/architecture.md for the files each step reads and writes.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


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


rule all:
    input:
        final_targets(),
    default_target: True
