from pathlib import Path

from lus_core.synth.dataset import generate_dataset
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    config = config_of(sm)
    generate_dataset(Path(sm.output.labels).parent, config["dataset"]["synthetic"], config["classes"], config["seed"])
