"""Feature vectors of the four similarity spaces, and which frames go into an index.

Spaces (docs/architecture.md, "Similarity"):

- ``raw``: the frame as grayscale pixels, resized to ``raw_size`` x ``raw_size`` (area
  interpolation), then centred and scaled to unit L2 norm per frame, so brightness and gain
  differences between machines do not dominate the distance.
- ``softmax``: the CNN softmax vector (C,).
- ``embedding``: the CNN penultimate embedding (D,).
- ``tsne``: a 2-D openTSNE map fitted once on the indexed training embeddings. New frames are
  placed on the fixed map (:func:`place_on_tsne_map`: the median position of their nearest indexed
  frames), never by refitting (the study refitted per query, ~30 s each).

Everything here works on in-memory arrays; the ``*_from_store`` helpers read frames through
:class:`lus_core.frames.store.FrameReader` for the workflow steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd

from lus_core.cnn.predictions import Predictions, read_predictions
from lus_core.frames.decode import grey
from lus_core.frames.store import FrameReader

SPACES = ("raw", "softmax", "embedding", "tsne")

__all__ = [
    "SPACES",
    "Predictions",
    "read_predictions",
    "raw_features",
    "raw_features_from_store",
    "select_index_rows",
    "tsne_perplexity",
    "fit_tsne",
    "place_on_tsne_map",
    "space_features",
]


# --------------------------------------------------------------------------- predictions store
# The store has one reader (lus_core.cnn.predictions); the embedding and tsne spaces use its
# `embedding_all`: every frame embedded by the `all` model, one feature space, the same model
# `lus predict` uses for new videos.


# --------------------------------------------------------------------------- raw pixels


def raw_features(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, size*size) float32 vectors from uint8 frames (N, H, W), (N, H, W, 1) or (N, H, W, 3) RGB.

    Grayscale, area-resized to ``size`` x ``size``, then per frame: minus its mean, divided by its
    L2 norm (a constant frame gives the zero vector).
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:  # a single grayscale frame
        frames = frames[None]
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (N, H, W[, 1|3]), got shape {frames.shape}")
    out = np.empty((len(frames), size * size), dtype=np.float32)
    for i, frame in enumerate(frames):
        gray = (
            frame[..., 0]
            if frame.shape[-1] == 1
            else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        )
        small = cv2.resize(gray.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        out[i] = small.ravel()
    out -= out.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norm, out=out, where=norm > 1e-8)
    out[(norm <= 1e-8).ravel()] = 0.0
    return out


def raw_features_from_store(
    frame_index: pd.DataFrame, frame_ids: Sequence[int], size: int, batch: int = 256
) -> np.ndarray:
    """Raw-space vectors for ``frame_ids`` (global ids of frame_index.csv), read through FrameReader."""
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    pos = pd.Series(np.arange(len(frame_index)), index=frame_index["frame_id"].to_numpy())
    missing = ~np.isin(frame_ids, pos.index.to_numpy())
    if missing.any():
        raise KeyError(
            f"{int(missing.sum())} frame ids not in the frame index, e.g. {frame_ids[missing][:5].tolist()}"
        )
    rows = pos.loc[frame_ids].to_numpy()
    reader = FrameReader(frame_index)
    try:
        out = np.empty((len(rows), size * size), dtype=np.float32)
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            # one store may be grey and the next colour: each frame's grey image, then one array
            out[start : start + len(chunk)] = raw_features(np.concatenate([grey(reader.frame(i)[None]) for i in chunk]),
                                                           size)
    finally:
        reader.reset()
    return out


# --------------------------------------------------------------------------- which frames are indexed


def select_index_rows(
    split: Sequence[str],
    patient: Sequence[str],
    label: Sequence[int],
    per_patient_per_class: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Sorted row positions of the frames that go into an index: training patients only.

    ``per_patient_per_class`` > 0 keeps at most that many frames per (patient, class), drawn
    without replacement with ``seed`` (the study's balanced subsample); 0 keeps all.
    """
    split = np.asarray(split).astype(str)
    rows = np.flatnonzero(split == "train")
    if per_patient_per_class <= 0 or len(rows) == 0:
        return rows
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"row": rows, "patient": np.asarray(patient)[rows], "label": np.asarray(label)[rows]})
    keep = []
    for _, group in df.groupby(["patient", "label"], sort=True):
        r = group["row"].to_numpy()
        keep.append(
            r if len(r) <= per_patient_per_class else rng.choice(r, per_patient_per_class, replace=False)
        )
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------- t-SNE map


def tsne_perplexity(requested: float, n: int) -> float:
    """The perplexity actually used: t-SNE needs roughly 3 * perplexity < n - 1."""
    return float(max(1.0, min(float(requested), (n - 1) / 3.0)))


def fit_tsne(embeddings: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1):
    """Fit an openTSNE map on (training) embeddings; returns the ``TSNEEmbedding`` (picklable).

    Coordinates of the fitted points: ``np.asarray(result)``; new points: :func:`place_on_tsne_map`.
    """
    from openTSNE import TSNE  # only the t-SNE space pays for openTSNE's import (numba compilation)

    x = np.ascontiguousarray(embeddings, dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"a t-SNE map needs at least 4 indexed frames, got {len(x)}")
    tsne = TSNE(
        n_components=2,
        perplexity=tsne_perplexity(perplexity, len(x)),
        initialization="pca",
        metric="euclidean",
        random_state=seed,
        n_jobs=n_jobs,
        verbose=False,
    )
    return tsne.fit(x)


# how many nearest indexed frames (in the embedding space) place a new frame on the map
TSNE_PLACEMENT_K = 5


def place_on_tsne_map(
    tsne_embedding,
    embeddings: np.ndarray,
    snap_duplicates: bool = True,
    rtol: float = 1e-6,
    k: int = TSNE_PLACEMENT_K,
) -> np.ndarray:
    """Place new frames in a fitted map; (N, 2) float32.

    A new frame goes to the coordinate-wise median of the map positions of its ``k`` nearest
    indexed frames in the embedding space (openTSNE's ``median`` placement with k = 5). The map
    itself is never changed, and each frame is placed on its own, so its place does not depend on
    the other frames placed with it (a whole test set in the workflow, a few videos in `lus
    predict`). openTSNE's ``transform`` optimises the new points further, but its normaliser sums
    over the whole batch: the same frame moved by half a map unit with the batch, and each call
    cost 0.5 s whatever its size. On the COVID-BLUES test frames the median of 5 keeps as many of
    a frame's 10 embedding neighbours among its 10 map neighbours as the optimisation did (34%
    against 35%). With ``snap_duplicates`` a frame whose embedding equals an indexed frame's (up
    to ``rtol`` relative distance, e.g. a training video run through ``lus predict`` again) gets
    that frame's fitted position.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    out = np.empty((len(x), 2), dtype=np.float32)
    if len(x) == 0:
        return out
    knn = _reference_knn(tsne_embedding)
    ref = np.asarray(tsne_embedding)
    nearest, _ = knn.query(x, int(min(k, len(ref))))
    out[:] = np.median(ref[np.asarray(nearest)], axis=1)
    if snap_duplicates:
        ref_pos = _snap_to_reference(tsne_embedding, x, rtol)
        hit = ref_pos >= 0
        out[hit] = ref[ref_pos[hit]]
    return out


def _reference_knn(tsne_embedding):
    """openTSNE's nearest-neighbour index over the map's indexed embeddings."""
    knn = getattr(getattr(tsne_embedding, "affinities", None), "knn_index", None)
    if knn is None or getattr(knn, "data", None) is None:
        raise ValueError("this t-SNE map keeps no neighbour index of its frames (another openTSNE version?); "
                         "rebuild it: snakemake --forcerun build_tsne_index")
    return knn


def _snap_to_reference(tsne_embedding, x: np.ndarray, rtol: float) -> np.ndarray:
    """Reference row of each point that duplicates an indexed frame's embedding, else -1."""
    knn = _reference_knn(tsne_embedding)
    nearest, _ = knn.query(x, 1)
    nearest = np.asarray(nearest)[:, 0]
    ref = np.asarray(knn.data, dtype=np.float64)[nearest]
    dist = np.linalg.norm(ref - x, axis=1)
    dup = dist <= rtol * np.maximum(np.linalg.norm(x, axis=1), 1.0)
    return np.where(dup, nearest, -1)


# --------------------------------------------------------------------------- one entry for all spaces


def space_features(
    space: str,
    *,
    frames: np.ndarray | None = None,
    softmax: np.ndarray | None = None,
    embedding: np.ndarray | None = None,
    raw_size: int = 16,
    tsne_embedding=None,
) -> np.ndarray:
    """Vectors of ``space`` from in-memory inputs (what ``lus predict`` has for a new video).

    raw: ``frames`` uint8 (N, H, W[, C]); softmax: ``softmax`` (N, C); embedding: ``embedding``
    (N, D); tsne: ``embedding`` plus the fitted ``tsne_embedding``.
    """
    if space == "raw":
        if frames is None:
            raise ValueError("space 'raw' needs frames")
        return raw_features(frames, raw_size)
    if space == "softmax":
        if softmax is None:
            raise ValueError("space 'softmax' needs softmax vectors")
        return np.ascontiguousarray(softmax, dtype=np.float32)
    if space == "embedding":
        if embedding is None:
            raise ValueError("space 'embedding' needs embeddings")
        return np.ascontiguousarray(embedding, dtype=np.float32)
    if space == "tsne":
        if embedding is None or tsne_embedding is None:
            raise ValueError("space 'tsne' needs embeddings and the fitted t-SNE map")
        return place_on_tsne_map(tsne_embedding, embedding)
    raise ValueError(f"unknown similarity space {space!r} (known: {', '.join(SPACES)})")
