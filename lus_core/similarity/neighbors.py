"""The neighbours file ``neighbors/{backbone}/{space}.h5``: its dataclass, writer and reader.

Datasets, one row per frame of the run (aligned to ``frame_id``), nearest first:

- ``neighbor_frame_id`` / ``neighbor_label`` / ``distance`` (N, k_max): the plain list, the k
  nearest indexed frames of other patients (-1 / -1 / NaN padding);
- for each diversity ``d`` in ``attrs["diversities"]`` (``video``, ``patient``) the same three
  datasets suffixed ``_{d}`` (e.g. ``neighbor_frame_id_video``): at most one neighbour per
  video (or patient), the nearest frame of each of the k_max nearest videos.

Attributes: ``space``, ``k_max``, ``metric``, ``backbone``, ``metrics`` (JSON), ``config``
(JSON) and ``diversities`` (JSON list; absent in files written before diverse lists existed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from lus_core.io_utils import atomic_path

__all__ = ["NeighborLists", "write_neighbors", "read_neighbors", "stored_diversities"]

FIELDS = ("neighbor_frame_id", "neighbor_label", "distance")
DTYPES = {"neighbor_frame_id": np.int64, "neighbor_label": np.int16, "distance": np.float32}


@dataclass
class NeighborLists:
    """One neighbour list per frame: ``frame_id`` (N,), the rest (N, k), nearest first."""

    frame_id: np.ndarray
    neighbor_frame_id: np.ndarray
    neighbor_label: np.ndarray
    distance: np.ndarray
    diversity: str = "none"
    attrs: dict = field(default_factory=dict)


def _name(name: str, diversity: str) -> str:
    return name if diversity == "none" else f"{name}_{diversity}"


def write_neighbors(out_h5, frame_id, lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], attrs: dict) -> None:
    """Write the file atomically; ``lists[diversity] = (neighbor_frame_id, neighbor_label,
    distance)``, ``"none"`` (the plain list) required."""
    if "none" not in lists:
        raise ValueError("the plain neighbour list (diversity 'none') is required")
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("frame_id", data=np.asarray(frame_id, dtype=np.int64))
        for diversity, arrays in lists.items():
            for name, arr in zip(FIELDS, arrays, strict=True):
                f.create_dataset(_name(name, diversity), data=np.asarray(arr).astype(DTYPES[name]))
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["diversities"] = json.dumps(sorted(d for d in lists if d != "none"))


def stored_diversities(path) -> list[str]:
    """The diversities whose lists ``path`` holds, ``"none"`` first."""
    with h5py.File(path, "r") as f:
        return ["none", *json.loads(f.attrs.get("diversities", "[]"))]


def read_neighbors(path, frame_ids=None, diversity: str = "none") -> NeighborLists:
    """The neighbour list of ``diversity``, optionally aligned to ``frame_ids`` (each must be in
    the file), sorted nearest first.  A diversity the file does not hold is a clear error."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        if _name(FIELDS[0], diversity) not in f:
            have = ["none", *json.loads(f.attrs.get("diversities", "[]"))]
            raise ValueError(
                f"{path}: no neighbour list with diversity {diversity!r} (the file holds {have}); "
                "rerun query_neighbors with this similarity.fallback_diversity / similarity.diversity"
            )
        fid = f["frame_id"][()].astype(np.int64)
        nid, lab, dist = (f[_name(n, diversity)][()] for n in FIELDS)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    nid, lab, dist = nid.astype(np.int64), lab.astype(np.int64), dist.astype(np.float64)
    if frame_ids is not None:
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        order = np.argsort(fid, kind="stable")
        pos = np.searchsorted(fid[order], frame_ids)
        pos = np.clip(pos, 0, max(len(fid) - 1, 0))
        if len(fid) == 0 or not np.array_equal(fid[order][pos], frame_ids):
            missing = frame_ids[(len(fid) == 0) | (fid[order][pos] != frame_ids)] if len(fid) else frame_ids
            raise ValueError(f"{path}: {len(missing)} frame(s) have no neighbour list, e.g. frame {missing[0]}")
        rows = order[pos]
        fid, nid, lab, dist = fid[rows], nid[rows], lab[rows], dist[rows]
    nearest = np.argsort(np.where(np.isfinite(dist), dist, np.inf), axis=1, kind="stable")
    take = np.take_along_axis
    return NeighborLists(fid, take(nid, nearest, 1), take(lab, nearest, 1), take(dist, nearest, 1), diversity, attrs)
