"""The extract_frames step: one video -> one HDF5 frame store; and the frame index over all."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lus_core.frame_store import (
    FORMAT_VERSION,
    build_frame_index,
    extraction_counts,
    write_frame_index,
    write_video_store,
    write_virtual_dataset,
)
from lus_core.ingest import DatasetError, VideoEntry, frame_labels
from lus_core.io_utils import atomic_path, config_json, sha256_file
from lus_core.skipped import write_skipped
from lus_core.video import VideoError, crop_resize, decode, sector_std

log = logging.getLogger(__name__)


def extract_video(entry: VideoEntry, out_h5: str | Path, config: dict) -> int:
    """Decode, crop the sector, resize, drop blank frames and store one video. Returns the
    number of frames stored.

    With `dataset.on_bad_video: skip`, a bad video is stored as an empty file whose
    `skipped` attribute says why (Snakemake needs the output; the index lists it as skipped).
    """
    fcfg, dcfg = config["frames"], config["dataset"]
    try:
        if not entry.ranges:
            raise DatasetError(f"{entry.path}: no label for this video")
        video = decode(entry.path, stride=fcfg["stride"], max_frames=fcfg["max_frames_per_video"],
                       min_decoded_fraction=dcfg["min_decoded_fraction"])
        labels = frame_labels(entry.ranges, video.frame_numbers)
        keep = np.array([lab is not None for lab in labels])
        if not keep.any():
            raise DatasetError(f"{entry.path}: no decoded frame falls inside a labelled range {entry.ranges}")
        if keep.sum() < len(keep):
            log.info("%s: %d frames outside labelled ranges dropped", entry.path, int((~keep).sum()))
        box = video.sector_box() if fcfg["crop"] == "auto" else (0, 0, *video.original_size[::-1])
        frames = crop_resize(video.frames if keep.all() else video.frames[keep], box, fcfg["size"])
        labels, numbers = [lab for lab in labels if lab is not None], video.frame_numbers[keep]
        frames, labels, numbers, n_blank = _drop_blank(entry, frames, box, labels, numbers, fcfg)
    except (VideoError, DatasetError) as exc:
        if dcfg["on_bad_video"] != "skip":
            raise
        log.warning("skipping %s", exc)
        _write_skipped(entry, out_h5, str(exc), config)
        return 0
    attrs = {
        "source_path": str(Path(entry.path).resolve()),
        "source_sha256": sha256_file(entry.path) if Path(entry.path).is_file() else "",
        "crop_box": list(box),
        "original_size": list(video.original_size),
        "fps": video.fps,
        "n_source_frames": video.n_source_frames,
        "n_declared_frames": video.n_declared_frames,
        "n_blank_dropped": n_blank,
        "stride": fcfg["stride"],
        "size": fcfg["size"],
        "classes": list(config["classes"]),
        "config": config_json(config),
        "skipped": "",
    }
    write_video_store(out_h5, frames, labels, numbers, entry.patient, entry.video, attrs)
    return len(frames)


def _drop_blank(entry: VideoEntry, frames, box, labels, numbers, fcfg: dict):
    """Frames black or nearly constant inside the sector (probe off the patient, a frozen or
    blanked screen) carry no evidence for any score: drop them, and say how many."""
    if not fcfg["drop_blank"]:
        return frames, labels, numbers, 0
    blank = sector_std(frames, box) < fcfg["blank_std"]
    n_blank = int(blank.sum())
    if n_blank == len(frames):
        raise VideoError(f"{entry.path}: all {n_blank} kept frames are blank (std inside the sector below "
                         f"frames.blank_std = {fcfg['blank_std']})")
    if n_blank:
        log.info("%s: %d blank frames dropped (std inside the sector below frames.blank_std = %s)",
                 entry.path, n_blank, fcfg["blank_std"])
        frames, numbers = frames[~blank], numbers[~blank]
        labels = [lab for lab, b in zip(labels, blank, strict=True) if not b]
    return frames, labels, numbers, n_blank


def _write_skipped(entry: VideoEntry, out_h5, reason: str, config: dict) -> None:
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            video_id=entry.video, patient=entry.patient, source_path=str(entry.path),
            skipped=reason, config=config_json(config), format_version=FORMAT_VERSION,
        )


def run_frame_index(h5_paths, out_csv, out_vds, out_skipped, config: dict) -> pd.DataFrame:
    """Index all stored frames, write the virtual dataset and the list of skipped videos."""
    stored, skipped = [], []
    for path in h5_paths:
        with h5py.File(path, "r") as f:
            reason = f.attrs.get("skipped", "")
            if reason:
                skipped.append({"video": f.attrs["video_id"], "source_path": f.attrs["source_path"], "reason": reason})
            else:
                stored.append(path)
    if not stored:
        raise DatasetError("every video was skipped; see " + str(out_skipped))
    index = build_frame_index(stored)
    blank = extraction_counts(stored)["n_blank_dropped"].fillna(0)
    if blank.sum():
        log.info("%d blank frames dropped in %d of %d videos (store attribute n_blank_dropped)",
                 int(blank.sum()), int((blank > 0).sum()), len(stored))
    missing = sorted(set(range(len(config["classes"]))) - set(index["label"]))
    if missing:
        log.warning("no frame of classes %s in the dataset", [config["classes"][i] for i in missing])
    write_skipped(skipped, out_skipped)
    write_virtual_dataset(index, out_vds, config_json(config))
    write_frame_index(index, out_csv)
    return index
