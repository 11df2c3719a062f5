"""Reading the evaluation's inputs aligned to a list of frame ids: confidence tables
(``confidence/{backbone}/{method}.csv``) and neighbour files (``neighbors/{backbone}/{space}.h5``).
The predictions store is read through :mod:`lus_core.cnn.predictions`, the confidence tables
through :mod:`lus_core.confidence.scores_file`."""

from __future__ import annotations

import numpy as np

from lus_core.confidence.scores_file import read_scores

__all__ = ["align", "load_confidence", "check_neighbours_are_training_frames"]


def align(source_ids, wanted, what: str) -> np.ndarray:
    """Row index in ``source_ids`` of every id in ``wanted`` (error naming ``what`` when one is missing)."""
    source_ids = np.asarray(source_ids, dtype=np.int64).ravel()
    wanted = np.asarray(wanted, dtype=np.int64).ravel()
    if source_ids.size == 0:
        if wanted.size:
            raise ValueError(f"{what}: no rows, {wanted.size} frame(s) wanted")
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(source_ids, kind="stable")
    pos = np.clip(np.searchsorted(source_ids[order], wanted), 0, source_ids.size - 1)
    rows = order[pos]
    missing = source_ids[rows] != wanted
    if np.any(missing):
        ids = wanted[missing][:5].tolist()
        raise ValueError(f"{what}: {int(missing.sum())} frame(s) missing, e.g. frame_id {ids}")
    return rows


def load_confidence(csv_path, frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(confidence, trusted, set_size or None) aligned to ``frame_ids``."""
    df = read_scores(csv_path)
    rows = align(df["frame_id"].to_numpy(np.int64), frame_ids, f"confidence {csv_path}")
    conf = df["confidence"].to_numpy(np.float64)[rows]
    trusted = df["trusted"].to_numpy(bool)[rows]
    set_size = df["set_size"].to_numpy(np.float64)[rows] if df["set_size"].notna().any() else None
    return conf, trusted, set_size


def check_neighbours_are_training_frames(path, query_patient, neighbor_ids, train_ids, train_patient) -> None:
    """Every (non-padded) neighbour must be a training frame of another patient: the index may
    hold no test frame, and a frame may not vote for itself or its own patient (that would
    make the validation score of a fallback optimistic)."""
    nid = np.asarray(neighbor_ids, dtype=np.int64)
    valid = nid >= 0
    train_ids = np.asarray(train_ids, dtype=np.int64)
    order = np.argsort(train_ids, kind="stable")
    pos = np.clip(np.searchsorted(train_ids[order], nid), 0, max(len(train_ids) - 1, 0))
    rows = order[pos] if len(train_ids) else np.zeros_like(nid)
    is_train = valid & (train_ids[rows] == nid) if len(train_ids) else np.zeros_like(valid)
    if np.any(valid & ~is_train):
        bad = np.unique(nid[valid & ~is_train])[:5].tolist()
        raise ValueError(f"neighbors {path}: neighbour frame(s) {bad} are not training frames; rebuild the index")
    same = valid & (np.asarray(train_patient)[rows] == np.asarray(query_patient)[:, None])
    if np.any(same):
        raise ValueError(f"neighbors {path}: {int(same.sum())} neighbour(s) from the query frame's own patient")
