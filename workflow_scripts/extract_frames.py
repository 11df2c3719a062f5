import json

from lus_core.extract import extract_video
from lus_core.ingest import VideoEntry, synthetic_entry
from lus_core.store_check import record_store
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    info = json.loads(sm.params.entry)
    if info["ranges"] is None:  # synthetic: labels come from the generated table
        entry = synthetic_entry(info["path"], sm.config["dataset"], sm.config["classes"], sm.input.labels[0])
    else:
        entry = VideoEntry(sm.wildcards.video, info["path"], info["patient"], [tuple(r) for r in info["ranges"]])
    extract_video(entry, sm.output.store, sm.config)
    record_store(sm.output.store, sm.output.record)  # what verify_frame_stores checks the store against
