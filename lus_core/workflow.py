"""Helpers used by the Snakemake rules (kept here so they are unit-tested)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent


def code_version(*modules: str) -> str:
    """Hash of the source of the given lus_core modules or sub-packages.

    Snakemake reruns a job when its params change, not when an imported module changes;
    putting this hash into `params` makes an edit of the step's code rerun the step.
    """
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        base = PACKAGE / name.replace(".", "/")
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        if not files or not files[0].exists():
            raise FileNotFoundError(f"code_version: no lus_core module named {name!r}")
        for f in files:
            h.update(f.relative_to(PACKAGE).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def video_table(config: dict, synth_dir: str) -> dict[str, dict]:
    """Video id -> {path, patient, ranges} known when the DAG is built.

    Synthetic videos are planned from the config (generated later by a job); real videos
    are discovered and matched with their labels now, so that every labelling problem is
    reported before any job runs.
    """
    ds = config["dataset"]
    if ds["synthetic"]["enabled"]:
        from lus_core.synth import planned_videos

        return {
            Path(name).stem: {"path": f"{synth_dir}/videos/{name}", "patient": patient, "ranges": None}
            for name, patient in planned_videos(ds["synthetic"])
        }
    from lus_core.ingest import build_video_table

    return {
        e.video: {"path": e.path, "patient": e.patient, "ranges": e.ranges}
        for e in build_video_table(ds, config["classes"])
    }


@contextlib.contextmanager
def step_logging(snakemake):
    """Send a script's stderr and logging to the rule's log file."""
    log_path = snakemake.log[0] if snakemake.log else None
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        old = sys.stderr
        sys.stderr = log_file
        logging.basicConfig(
            stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
        )
        try:
            yield
        except Exception:
            logging.getLogger("lus").exception("step failed")
            raise
        finally:
            sys.stderr = old
