from lus_core.extract import run_frame_index
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_frame_index(list(sm.input.stores), sm.output.index, sm.output.vds, sm.output.skipped, sm.config)
