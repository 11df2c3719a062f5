from pathlib import Path

from lus_core.synth import generate_dataset
from lus_core.workflow import step_logging

with step_logging(snakemake):  # noqa: F821
    generate_dataset(
        Path(snakemake.output.labels).parent,  # noqa: F821
        snakemake.params.synthetic,  # noqa: F821
        snakemake.params.classes,  # noqa: F821
        snakemake.params.seed,  # noqa: F821
    )
