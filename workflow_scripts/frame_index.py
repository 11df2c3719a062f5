from lus_core.frames.extract import run_frame_index
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_frame_index(list(sm.input.stores), sm.output.index, sm.output.vds, sm.output.skipped, config_of(sm))
