"""The extract_frames step: each video -> one HDF5 frame store; and the frame index over all."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lus_core.frames.decode import VideoError, crop_resize, decode, frame_stds, sector_std
from lus_core.frames.dicom import is_dicom
from lus_core.frames.kept import KeptStores
from lus_core.frames.labels import DatasetError, VideoEntry, covering_ranges
from lus_core.frames.skipped import write_skipped
from lus_core.frames.store import (
    FORMAT_VERSION,
    build_frame_index,
    extraction_counts,
    write_frame_index,
    write_video_store,
    write_virtual_dataset,
)
from lus_core.frames.verify import record_store
from lus_core.io_utils import atomic_path, config_json, sha256_file

log = logging.getLogger(__name__)

# Videos decoded at once during extraction, each on one FFmpeg thread. On LUS-sized frames (a
# few hundred pixels) FFmpeg's default threads (one per core) decode one video no faster than
# one thread, at a fifth more CPU; two videos at once keep two cores decoding (bench/extract.py)
DECODERS = 2


def extract_video(entry: VideoEntry, out_h5: str | Path, config: dict) -> int:
    """Decode, crop the sector, resize, drop blank frames and store one video. Returns the
    number of frames stored.

    With `dataset.on_bad_video: skip`, a bad video is stored as an empty file whose
    `skipped` attribute says why (Snakemake needs the output; the index lists it as skipped).
    """
    return extract_videos([entry], [out_h5], config)[0]


def extract_videos(entries: list[VideoEntry], out_h5s: list[str | Path], config: dict,
                   after_store: Callable[[Path], None] | None = None) -> list[int]:
    """`extract_video` for several videos, stored in order by a worker thread (crop, compress,
    write) while the next ones decode. `after_store(path)` runs on each store once it is
    written (the extraction record). Returns the frames stored per video."""
    if len(entries) != len(out_h5s):
        raise ValueError(f"{len(entries)} videos for {len(out_h5s)} stores")
    jobs = list(zip(entries, map(Path, out_h5s), strict=True))
    counts: list[int] = []
    with ThreadPoolExecutor(DECODERS, thread_name_prefix="decode") as decoding, \
            ThreadPoolExecutor(1, thread_name_prefix="store") as writer:
        decoded = deque(decoding.submit(_decode_entry, e, config, 1) for e, _ in jobs[:DECODERS])
        storing = None
        for k, (entry, out_h5) in enumerate(jobs):
            ready = decoded.popleft().result()
            if storing is not None:
                counts.append(storing.result())
            storing = writer.submit(_store_entry, entry, out_h5, config, ready, after_store)
            # the next decode starts once the previous store is written: at most DECODERS + 1
            # videos in memory (DECODERS decoding or decoded, one being stored)
            if k + DECODERS < len(jobs):
                decoded.append(decoding.submit(_decode_entry, jobs[k + DECODERS][0], config, 1))
        if storing is not None:
            counts.append(storing.result())
    return counts


def extract_job(entries: list[VideoEntry], stores: list[str | Path], records: list[str | Path], config: dict,
                kept: KeptStores | None = None) -> dict:
    """One `extract_frames` job: every video's store and its extraction record. With `kept`, a
    video whose store an earlier job made from the same source, label entry, settings and code
    gets that store back (bitwise, lus_core.frames.kept) and the others are extracted and kept.
    Returns {"extracted": [...], "kept": [...]} (video ids)."""
    todo, restored = [], []
    for entry, store, record in zip(entries, map(Path, stores), map(Path, records), strict=True):
        if kept is not None and kept.restore(entry, store, record):
            restored.append(entry.video)
        else:
            todo.append((entry, store, record))
    by_store = {store: (entry, record) for entry, store, record in todo}

    def after_store(store: Path) -> None:
        entry, record = by_store[store]
        record_store(store, record)  # what verify_frame_stores checks the store against
        if kept is not None:
            kept.keep(entry, store, record)

    extract_videos([t[0] for t in todo], [t[1] for t in todo], config, after_store)
    log.info("%d store(s) extracted, %d kept from an earlier extraction", len(todo), len(restored))
    return {"extracted": [t[0].video for t in todo], "kept": restored}


@dataclass
class _Decoded:
    video: object  # lus_core.frames.decode.DecodedVideo
    labels: list  # class index per decoded frame (None outside the labelled ranges)
    keep: np.ndarray  # decoded frames inside a labelled range
    findings: np.ndarray  # int8 (decoded frames, F): each finding's value (-1 unknown) per frame


def _decode_entry(entry: VideoEntry, config: dict, threads: int = 0) -> _Decoded | Exception:
    """The decoded video (on `threads` FFmpeg threads, 0 its default) and its frame labels; the
    error instead when the video is bad and `dataset.on_bad_video` is skip (raised otherwise)."""
    try:
        if not entry.ranges:
            raise DatasetError(f"{entry.path}: no label for this video")
        video = decode_video(entry.path, config, threads)
        covering = covering_ranges(entry.ranges, video.frame_numbers)
        labels = [None if i is None else entry.ranges[i][2] for i in covering]
        keep = np.array([lab is not None for lab in labels])
        if not keep.any():
            raise DatasetError(f"{entry.path}: no decoded frame falls inside a labelled range {entry.ranges}")
        if keep.sum() < len(keep):
            log.info("%s: %d frames outside labelled ranges dropped", shown(entry), int((~keep).sum()))
        return _Decoded(video, labels, keep, frame_findings(entry, covering, config))
    except (VideoError, DatasetError) as exc:
        if config["dataset"]["on_bad_video"] != "skip":
            raise redacted(exc, entry) from None
        return redacted(exc, entry)


def shown(entry: VideoEntry) -> str:
    """What logs and messages call a video: a DICOM's recorded source (no identifying name), else its path."""
    return entry.source or str(entry.path)


def redacted(exc: Exception, entry: VideoEntry) -> Exception:
    """`exc` with the video's path replaced by its recorded source (DICOM: identifying names replaced)."""
    if not entry.source or str(entry.path) not in str(exc):
        return exc
    return type(exc)(str(exc).replace(str(Path(entry.path)), entry.source))


def _store_entry(entry: VideoEntry, out_h5: Path, config: dict, decoded: _Decoded | Exception,
                 after_store: Callable[[Path], None] | None) -> int:
    """Crop, resize, drop blank frames and write one decoded video (or its skipped store)."""
    n = 0
    if not isinstance(decoded, Exception):
        try:
            kept = stored_frames(entry.path, decoded.video, config, decoded.keep, shown(entry))
        except VideoError as exc:
            if config["dataset"]["on_bad_video"] != "skip":
                raise redacted(exc, entry) from None
            decoded = redacted(exc, entry)
    if isinstance(decoded, Exception):
        log.warning("skipping %s", decoded)
        _write_skipped(entry, out_h5, str(decoded), config)
    else:
        video, fcfg = decoded.video, config["frames"]
        if video.burned_in == "YES":
            log.warning("%s: BurnedInAnnotation is YES: text (possibly identifying) is part of the image "
                        "pixels; the store and the report say so", entry.source or entry.video)
        attrs = {
            # a DICOM's path relative to its video folder, with identifying names replaced
            # (lus_core.frames.identity); other videos' absolute path
            "source_path": entry.source or str(Path(entry.path).resolve()),
            "source_sha256": sha256_file(entry.path) if Path(entry.path).is_file() else "",
            "crop_box": list(kept.box),
            "crop_source": crop_source(video, fcfg),
            "source_kind": source_kind(Path(entry.path)),
            "burned_in_annotation": video.burned_in,
            "device": video.device,
            "original_size": list(video.original_size),
            "fps": video.fps,
            "n_source_frames": video.n_source_frames,
            "n_declared_frames": video.n_declared_frames,
            "n_blank_dropped": kept.n_blank,
            "stride": fcfg["stride"],
            "size": fcfg["size"],
            "classes": list(config["classes"]),
            "config": config_json(config),
            "skipped": "",
        }
        labels = [decoded.labels[i] for i in kept.positions]
        findings = (list(config["dataset"]["findings"]), decoded.findings[kept.positions])
        write_video_store(out_h5, kept.frames, labels, kept.numbers, entry.patient, entry.video, attrs, findings)
        n = len(kept.frames)
    if after_store is not None:
        after_store(out_h5)
    return n


def frame_findings(entry: VideoEntry, covering: list[int | None], config: dict) -> np.ndarray:
    """int8 (frames, F): the configured findings of the range covering each frame (-1 outside)."""
    n_findings = len(config["dataset"]["findings"])
    if n_findings and len(entry.findings) != len(entry.ranges):
        raise DatasetError(f"{entry.path}: dataset.findings are configured but the video's entry has no finding values")
    table = np.full((len(entry.ranges) + 1, n_findings), -1, np.int8)  # last row: outside every range
    if n_findings:
        table[:-1] = entry.findings
    return table[[len(entry.ranges) if i is None else i for i in covering]]


@dataclass
class StoredFrames:
    """What the frame store keeps of a decoded video (and what `lus predict` scores)."""

    frames: np.ndarray  # uint8 (N, size, size, C): sector crop, resized, blank frames dropped
    numbers: np.ndarray  # frame numbers in the source video
    positions: np.ndarray  # indices into the decoded frames
    box: tuple  # sector crop box (x0, y0, x1, y1) in source pixels
    n_blank: int  # blank frames dropped


def decode_video(path, config: dict, threads: int = 0):
    """Decode `path` with the run's frame settings (stride, frame cap, decodable fraction) on
    `threads` FFmpeg threads (0: its default).

    A frame cap (`frames.max_frames_per_video`) chooses among the frames that are not blank: when a
    planned frame is blank, every stride-th frame is measured in one more pass (no frame kept) and
    the cap's evenly spaced frames are taken from the others, so a video whose first frames are
    black still gives the cap's number of frames."""
    fcfg, dcfg = config["frames"], config["dataset"]
    options = {"stride": fcfg["stride"], "min_decoded_fraction": dcfg["min_decoded_fraction"], "threads": threads}
    video = decode(path, max_frames=fcfg["max_frames_per_video"], **options)
    if not (fcfg["max_frames_per_video"] and fcfg["drop_blank"]):
        return video
    box = crop_box(video, fcfg)
    if not (sector_std(crop_resize(video.frames, box, fcfg["size"]), box) < fcfg["blank_std"]).any():
        return video  # the usual case: no planned frame is blank, no second pass
    numbers, stds = frame_stds(path, fcfg["stride"], box, fcfg["size"], threads)
    usable = numbers[stds >= fcfg["blank_std"]]
    if not len(usable):
        return video  # every frame is blank: stored_frames names the video
    cap = fcfg["max_frames_per_video"]
    plan = usable if len(usable) <= cap else usable[np.linspace(0, len(usable) - 1, cap).round().astype(int)]
    return decode(path, frames=plan, **options)


def crop_box(video, fcfg: dict) -> tuple[int, int, int, int]:
    """The crop of a decoded video (frames.crop: auto): the sector its DICOM header's ultrasound
    regions give, else the one found in its frames; with frames.crop: none the whole frame."""
    if fcfg["crop"] != "auto":
        return 0, 0, *video.original_size[::-1]
    return tuple(video.region_box) if video.region_box is not None else video.sector_box()


def source_kind(path: Path) -> str:
    """The store attribute source_kind: dicom, frames (a folder of images) or video (a container)."""
    return "dicom" if is_dicom(path) else ("frames" if path.is_dir() else "video")


def crop_source(video, fcfg: dict) -> str:
    """Where `crop_box` came from (the store attribute crop_source): dicom_regions, auto or none."""
    if fcfg["crop"] != "auto":
        return "none"
    return "dicom_regions" if video.region_box is not None else "auto"


def stored_frames(path, video, config: dict, keep: np.ndarray | None = None, name: str | None = None) -> StoredFrames:
    """The sector crop, resized, of the decoded frames `keep` (default all), blank frames dropped:
    the one preparation of frames shared by extraction and `lus predict`. `name`: what messages
    call the video (default its path)."""
    fcfg = config["frames"]
    path = name or path
    positions = np.arange(len(video.frames)) if keep is None else np.flatnonzero(keep)
    box = crop_box(video, fcfg)
    frames = crop_resize(video.frames if len(positions) == len(video.frames) else video.frames[positions], box,
                         fcfg["size"])
    n_blank = 0
    if fcfg["drop_blank"]:
        # black or nearly constant inside the sector (probe off the patient, a frozen or blanked
        # screen): no evidence for any score
        blank = sector_std(frames, box) < fcfg["blank_std"]
        n_blank = int(blank.sum())
        if n_blank == len(frames):
            raise VideoError(f"{path}: all {n_blank} kept frames are blank (std inside the sector below "
                             f"frames.blank_std = {fcfg['blank_std']})")
        if n_blank:
            log.info("%s: %d blank frames dropped (std inside the sector below frames.blank_std = %s)",
                     path, n_blank, fcfg["blank_std"])
            frames, positions = frames[~blank], positions[~blank]
    return StoredFrames(frames, video.frame_numbers[positions], positions, box, n_blank)


def _write_skipped(entry: VideoEntry, out_h5, reason: str, config: dict) -> None:
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            video_id=entry.video, patient=entry.patient, source_path=entry.source or str(entry.path),
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
