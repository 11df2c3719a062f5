import json
from pathlib import Path

from lus_core.frames.extract import extract_job
from lus_core.frames.kept import KeptStores
from lus_core.frames.labels import VideoEntry, synthetic_entry
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
config = config_of(sm)


def entry_of(info: dict) -> VideoEntry:
    if info["ranges"] is None:  # synthetic: labels come from the generated table
        return synthetic_entry(info["path"], config["dataset"], config["classes"], sm.input.labels[0])
    return VideoEntry(info["video"], info["path"], info["patient"], [tuple(r) for r in info["ranges"]],
                      [tuple(v) for v in info["findings"]], info["source"])


with step_logging(sm):
    entries = [entry_of(info) for info in json.loads(sm.params.entries)]
    # the stores an earlier job made with the same source, labels, settings and code are kept
    kept = KeptStores(Path(sm.output.stores[0]).parent, {"config": config, "code": sm.params.code})
    extract_job(entries, list(sm.output.stores), list(sm.output.records), config, kept)
