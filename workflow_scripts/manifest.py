from lus_core.manifest import write_manifest
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    write_manifest(sm.config["results"], list(sm.input), sm.config, sm.output[0])
