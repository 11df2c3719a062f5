"""The frame store: one HDF5 file per video, a frame index over all videos, a virtual dataset.

Contract (docs/architecture.md): `frames` uint8 (N, H, W, C) chunked one frame per chunk,
`label` int16, `frame_index` int32, `patient` / `video` strings, provenance in attributes.

Format 2 (attribute `format_version`) compresses frames with Blosc (LZ4, bit-shuffled), an
HDF5 filter that `hdf5plugin` registers: importing this module (or `lus_core`) registers it for
every reader in the process; other tools need `HDF5_PLUGIN_PATH=$(python -c "import
hdf5plugin; print(hdf5plugin.PLUGIN_PATH)")`. Format 1 stores (gzip, no `format_version`)
stay readable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pandas as pd

from lus_core.io_utils import atomic_path

FORMAT_VERSION = 2
# LZ4 after a bit shuffle: about gzip's ratio on ultrasound frames at a fraction of its cost,
# in both directions (bench/extract.py measures writing and training-style reading)
FRAME_CODEC = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE)
STR = h5py.string_dtype()
INDEX_COLUMNS = ["frame_id", "video", "patient", "frame", "label", "h5", "row"]


def write_video_store(
    path: str | Path,
    frames: np.ndarray,
    labels: Sequence[int],
    frame_numbers: Sequence[int],
    patient: str,
    video_id: str,
    attrs: dict,
    findings: tuple[list[str], np.ndarray] | None = None,
) -> None:
    """Write one video's frames atomically. `frames` is uint8 (N, H, W, C); `findings` is
    (names, int8 (N, F) values 1 / 0 / -1 unknown), stored when there are any."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"{path}: frames must be uint8 (N, H, W, C), got {frames.dtype} {frames.shape}")
    n = len(frames)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("frames", data=frames, chunks=(1, *frames.shape[1:]), **FRAME_CODEC)
        f.create_dataset("label", data=np.asarray(labels, dtype=np.int16))
        f.create_dataset("frame_index", data=np.asarray(frame_numbers, dtype=np.int32))
        f.create_dataset("patient", data=[patient] * n, dtype=STR)
        f.create_dataset("video", data=[video_id] * n, dtype=STR)
        if findings is not None and findings[0]:
            names, values = findings
            values = np.asarray(values, dtype=np.int8).reshape(n, len(names))
            f.create_dataset("findings", data=values)
            f.attrs["finding_names"] = json.dumps(list(names))
        f.attrs["video_id"] = video_id
        f.attrs["patient"] = patient
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value


EXTRACTION_COUNTS = ["n_declared_frames", "n_source_frames", "n_blank_dropped"]


def extraction_counts(video_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Per stored video: frames its container declared, frames decoded, blank frames dropped,
    frames stored (for the report). Skipped videos and format-1 stores give what they hold."""
    rows = []
    for path in video_paths:
        with h5py.File(path, "r") as f:
            if f.attrs.get("skipped", ""):
                continue
            row = {"video": str(f.attrs["video_id"]), "n_stored": len(f["label"])}
            rows.append(row | {k: int(f.attrs[k]) if k in f.attrs else None for k in EXTRACTION_COUNTS})
    return pd.DataFrame(rows, columns=["video", "n_stored", *EXTRACTION_COUNTS])


FINDING_PREFIX = "finding_"


def stored_findings(f: h5py.File) -> dict[str, np.ndarray]:
    """A store's findings: name -> int8 (N,) values (1 yes, 0 no, -1 unknown); {} when none."""
    if "findings" not in f:
        return {}
    names = json.loads(f.attrs["finding_names"])
    values = f["findings"][()]
    return {name: values[:, j] for j, name in enumerate(names)}


def build_frame_index(video_paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per frame over all videos, videos sorted by id, frames in stored order; a
    `finding_<name>` column per finding the stores hold (-1 where a store lacks it)."""
    parts = []
    for path in sorted(video_paths, key=lambda p: Path(p).stem):
        with h5py.File(path, "r") as f:
            n = len(f["label"])
            part = pd.DataFrame(
                {
                    "video": f.attrs["video_id"],
                    "patient": str(f.attrs["patient"]),
                    "frame": f["frame_index"][:],
                    "label": f["label"][:].astype(int),
                    "h5": str(path),
                    "row": np.arange(n),
                }
            )
            for name, values in stored_findings(f).items():
                part[FINDING_PREFIX + name] = values.astype(int)
            parts.append(part)
    index = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INDEX_COLUMNS[1:])
    index.insert(0, "frame_id", np.arange(len(index)))
    finding_cols = [c for c in index.columns if c.startswith(FINDING_PREFIX)]
    for col in finding_cols:
        index[col] = index[col].fillna(-1).astype(int)
    return index[INDEX_COLUMNS + finding_cols]


def finding_targets(index: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """int64 (N, F): the frame index's values of findings `names` (1 / 0 / -1 unknown)."""
    missing = [n for n in names if FINDING_PREFIX + n not in index.columns]
    if missing:
        raise ValueError(f"the frame index has no column for finding(s) {missing} (dataset.findings); "
                         "its stores were extracted without them: rerun extraction")
    return index[[FINDING_PREFIX + n for n in names]].to_numpy(np.int64).reshape(len(index), len(names))


def write_frame_index(index: pd.DataFrame, csv_path: str | Path) -> None:
    with atomic_path(csv_path) as tmp:
        index.to_csv(tmp, index=False)


def read_frame_index(csv_path: str | Path) -> pd.DataFrame:
    return pd.read_csv(csv_path, dtype={"patient": str, "video": str})


def write_virtual_dataset(index: pd.DataFrame, vds_path: str | Path, config_json: str = "{}") -> bool:
    """Present all frames as one (N, H, W, C) array without copying them.

    Returns False (and writes only the labels) when videos differ in shape or channel count,
    since one virtual dataset needs one shape; loaders then read the per-video files.
    """
    vds_path = Path(vds_path)
    videos = index.drop_duplicates("video")[["video", "h5"]]
    shapes = {}
    for h5_path in videos["h5"]:
        with h5py.File(h5_path, "r") as f:
            shapes[h5_path] = f["frames"].shape
    uniform = len({s[1:] for s in shapes.values()}) <= 1 and len(shapes) > 0
    with atomic_path(vds_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("label", data=index["label"].to_numpy(np.int16))
        f.create_dataset("frame_id", data=index["frame_id"].to_numpy(np.int64))
        f.attrs["config"] = config_json
        f.attrs["uniform"] = uniform
        if uniform:
            frame_shape = next(iter(shapes.values()))[1:]
            layout = h5py.VirtualLayout(shape=(len(index), *frame_shape), dtype=np.uint8)
            start = 0
            for h5_path in videos["h5"]:
                n = shapes[h5_path][0]
                # relative source paths keep the store valid when the results folder moves
                rel = os.path.relpath(Path(h5_path).resolve(), vds_path.parent.resolve())
                layout[start : start + n] = h5py.VirtualSource(str(rel), "frames", shape=shapes[h5_path])
                start += n
            f.create_virtual_dataset("frames", layout, fillvalue=0)
    return uniform


def frames_by_id(frame_index: pd.DataFrame, frame_ids: Sequence[int]) -> list[np.ndarray]:
    """The stored uint8 frames (H, W, C) of global `frame_ids` (frame_index.csv), in that order."""
    pos = pd.Series(np.arange(len(frame_index)), index=frame_index["frame_id"].to_numpy())
    reader = FrameReader(frame_index)
    try:
        return [reader.frame(int(pos[int(i)])) for i in frame_ids]
    finally:
        reader.reset()


class FrameReader:
    """Random access to frames through the frame index; opens files lazily (one handle per file).

    Safe to use in DataLoader workers: create it (or call `reset()`) inside each worker, since
    HDF5 handles must not cross a fork.
    """

    def __init__(self, index: pd.DataFrame):
        self.h5 = index["h5"].to_numpy()
        self.row = index["row"].to_numpy()
        self._files: dict[str, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.row)

    def reset(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def frame(self, i: int) -> np.ndarray:
        """Frame i of the index as uint8 (H, W, C)."""
        path = self.h5[i]
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = h5py.File(path, "r")
        return f["frames"][self.row[i]]

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.frame(i) for i in indices])

    def __getstate__(self):
        # never pickle open handles into worker processes
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __del__(self):
        self.reset()
