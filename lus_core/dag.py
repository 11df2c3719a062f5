"""What the Snakefile computes when it builds the DAG (before any job runs): the video table."""

from __future__ import annotations

from pathlib import Path


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
