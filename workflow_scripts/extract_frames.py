import json
from pathlib import Path

from lus_core.frames.extract import extract_videos
from lus_core.frames.labels import VideoEntry, synthetic_entry
from lus_core.frames.verify import record_store
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
config = config_of(sm)


def entry_of(info: dict) -> VideoEntry:
    if info["ranges"] is None:  # synthetic: labels come from the generated table
        return synthetic_entry(info["path"], config["dataset"], config["classes"], sm.input.labels[0])
    return VideoEntry(info["video"], info["path"], info["patient"], [tuple(r) for r in info["ranges"]],
                      [tuple(v) for v in info["findings"]])


with step_logging(sm):
    entries = [entry_of(info) for info in json.loads(sm.params.entries)]
    # what verify_frame_stores checks each store against, written right after the store
    record_of = {Path(s): r for s, r in zip(sm.output.stores, sm.output.records, strict=True)}
    extract_videos(entries, list(sm.output.stores), config, lambda store: record_store(store, record_of[store]))
