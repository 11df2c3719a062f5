from lus_core.frames.verify import verify_frame_stores
from lus_core.workflow.script import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    verify_frame_stores(sm.input.stores, sm.input.records, sm.output[0])
