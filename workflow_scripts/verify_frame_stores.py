from lus_core.store_check import verify_frame_stores
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    verify_frame_stores(sm.input.stores, sm.input.records, sm.output[0])
