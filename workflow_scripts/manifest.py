from lus_core.runs.manifest import write_manifest
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    config = config_of(sm)
    write_manifest(config["results"], list(sm.input), config, sm.output[0])
