"""Scores from the nearest training frames: the fallback when the CNN is not trusted.

Labels are class indices 0..C-1 (docs/architecture.md).  Neighbour sets may be padded with
label -1 (fewer than k frames of other patients in the index); padded entries are ignored, and a
row without any valid neighbour gets score -1.

Modes of :func:`fallback_scores`:

- ``mean``: the mean of the neighbours' class indices, rounded half up (2.5 -> 3), as in the
  study (the scores are ordinal).
- ``vote``: the most frequent class; a tie goes to the **lower** class (the milder score, so a
  tie never escalates a score).
- ``weighted``: a vote where each neighbour counts 1 / (distance + eps); ties to the lower class.
"""

from __future__ import annotations

import numpy as np

from lus_core.metrics import round_half_up

FALLBACK_MODES = ("mean", "vote", "weighted")
EPS = 1e-6

__all__ = ["FALLBACK_MODES", "fallback_scores"]


def _prepare(neighbor_labels, distances, n_classes: int):
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    if labels.ndim == 1:
        labels = labels[None]
    if labels.ndim != 2:
        raise ValueError(f"neighbor_labels must be (N, k), got shape {labels.shape}")
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"neighbour label {labels.max()} outside 0..{n_classes - 1}")
    valid = labels >= 0
    if distances is None:
        dist = np.zeros(labels.shape)
    else:
        dist = np.asarray(distances, dtype=np.float64).reshape(labels.shape)
        valid &= np.isfinite(dist)
    return labels, np.where(valid, dist, 0.0), valid


def _class_weights(labels, weights, valid, n_classes: int) -> np.ndarray:
    """(N, C) summed weight per class."""
    n = len(labels)
    out = np.zeros((n, n_classes))
    rows = np.broadcast_to(np.arange(n)[:, None], labels.shape)
    np.add.at(out, (rows[valid], labels[valid]), weights[valid])
    return out


def fallback_scores(
    neighbor_labels, distances, n_classes: int, mode: str = "mean", eps: float = EPS
) -> np.ndarray:
    """(N,) int64 class index per row from its neighbours (see the module doc for the modes)."""
    if mode not in FALLBACK_MODES:
        raise ValueError(f"fallback mode must be one of {FALLBACK_MODES}, got {mode!r}")
    labels, dist, valid = _prepare(neighbor_labels, distances, n_classes)
    n_valid = valid.sum(1)
    if mode == "mean":
        total = np.where(valid, labels, 0).sum(1)
        score = round_half_up(total / np.maximum(n_valid, 1))
    else:
        weights = np.ones(labels.shape) if mode == "vote" else 1.0 / (dist + eps)
        counts = _class_weights(labels, weights, valid, n_classes)
        if mode == "weighted":
            # equal weights up to float noise are a tie: round before argmax
            counts = np.round(counts / np.maximum(counts.max(1, keepdims=True), 1e-300), 12)
        score = counts.argmax(1)  # argmax returns the first (lowest) class of a tie
    return np.where(n_valid > 0, score, -1).astype(np.int64)
