"""Workflow steps ``build_index`` and ``query_neighbors`` (one call each from workflow_scripts/).

``run_build_index`` indexes the training patients' frames (``split == 'train'`` in the
predictions store, optionally the study's per-patient-per-class subsample) in one space.
``run_query_neighbors`` finds, for every frame of the run, its ``k_max`` nearest indexed frames
of other patients and stores them with per-space metrics on the test patients (kNN accuracy and
quadratic-weighted kappa for every k and fallback mode, and annoy's recall against exact search)
in the HDF5 attribute ``metrics`` (a JSON string), plus the diverse lists (at most one neighbour
per video / patient) that ``similarity.diversity`` and ``similarity.fallback_diversity`` need
(file layout: ``lus_core.similarity.neighbors``).

The embedding and tsne spaces use the predictions store's ``embedding_all`` (every frame
embedded by the ``all`` model, one feature space; recorded as ``params.embedding_source``).
The softmax space uses the store's ``softmax`` (out-of-fold for training frames).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lus_core.frames.store import read_frame_index
from lus_core.io_utils import config_json
from lus_core.metrics import accuracy, quadratic_weighted_kappa
from lus_core.similarity.fallback import fallback_scores
from lus_core.similarity.features import (
    SPACES,
    fit_tsne,
    place_on_tsne_map,
    raw_features_from_store,
    read_predictions,
    select_index_rows,
    tsne_perplexity,
)
from lus_core.similarity.index import IndexedFrames, IndexSettings, SimilarityIndex, exact_search, recall_at_k
from lus_core.similarity.neighbors import write_neighbors

__all__ = ["similarity_settings", "run_build_index", "run_query_neighbors", "knn_metrics"]

def stored_list_diversities(settings: dict) -> list[str]:
    """Diverse neighbour lists a neighbours file holds: the gallery's and the fallback's."""
    wanted = {settings["diversity"], *settings["fallback_diversity"]} - {"none"}
    return sorted(wanted)


def similarity_settings(config: dict) -> dict:
    """The step's ``similarity`` keys with the run's seed and class count beside them."""
    out = dict(config["similarity"])
    out["seed"] = int(config["seed"])
    if "classes" in config:
        out["n_classes"] = len(config["classes"])
    return out


def _space_vectors(space, preds, rows, frame_index_csv, raw_size: int | None) -> np.ndarray:
    if space == "raw":
        if frame_index_csv is None:
            raise ValueError("space 'raw' needs frame_index.csv to read the frames")
        return raw_features_from_store(read_frame_index(frame_index_csv), preds.frame_id[rows], raw_size)
    if space == "softmax":
        return preds.softmax[rows]
    if space in ("embedding", "tsne"):
        return preds.embedding_all[rows]
    raise ValueError(f"unknown similarity space {space!r} (known: {', '.join(SPACES)})")


def run_build_index(
    space: str,
    predictions_h5,
    frame_index_csv,
    out_ann,
    out_ids,
    out_meta,
    out_tsne,
    config: dict,
    n_jobs: int = 1,
) -> dict:
    """Build and write ``{space}.ann``, ``.ids.csv``, ``.json`` (and ``.tsne.pkl`` for tsne).

    ``frame_index_csv`` is only read for the raw space (may be None otherwise); ``out_tsne``
    must be given for the tsne space and None for the others.  ``n_jobs``: threads for the
    annoy build and openTSNE.  Returns the metadata written to ``out_meta``.
    """
    if (space == "tsne") != (out_tsne is not None):
        raise ValueError(
            f"space {space!r}: out_tsne must be given exactly for the tsne space (got {out_tsne})"
        )
    s = similarity_settings(config)
    t0 = time.perf_counter()
    preds = read_predictions(predictions_h5)
    rows = select_index_rows(preds.split, preds.patient, preds.label, s["per_patient_per_class"], s["seed"])
    if len(rows) == 0:
        raise ValueError(f"{predictions_h5}: no training frames (split == 'train') to index")
    assert (preds.split[rows] == "train").all(), "a non-training frame would enter the index"
    vectors = _space_vectors(space, preds, rows, frame_index_csv, s["raw_size"])
    params: dict = {}
    tsne = None
    if space == "raw":
        params["raw_size"] = int(s["raw_size"])
    if space == "tsne":
        tsne = fit_tsne(vectors, s["tsne_perplexity"], seed=s["seed"], n_jobs=n_jobs)
        vectors = np.asarray(tsne, dtype=np.float32)
        params.update(
            perplexity=float(s["tsne_perplexity"]),
            perplexity_used=tsne_perplexity(s["tsne_perplexity"], len(rows)),
            embedding_dim=int(preds.embedding_all.shape[1]),
        )
    if space in ("embedding", "tsne"):
        params["embedding_source"] = "embedding_all"
    params["per_patient_per_class"] = int(s["per_patient_per_class"])
    index = SimilarityIndex.build(
        space, vectors, IndexedFrames(preds.frame_id[rows], preds.patient[rows], preds.label[rows]),
        IndexSettings(s["metric"], s["n_trees"], s["seed"], s["search_k"], n_jobs), params=params, tsne=tsne,
        config=config,
    )
    index.meta["backbone"] = str(preds.attrs.get("backbone", Path(predictions_h5).stem))
    index.meta["build_seconds"] = round(time.perf_counter() - t0, 3)
    index.save(out_ann, out_ids, out_meta, out_tsne)
    return index.meta


def knn_metrics(y_true, neighbor_labels, distances, ks, modes, n_classes: int) -> dict:
    """``{"k=5": {"mean": {"accuracy", "qwk", "coverage"}, ...}, ...}`` for the given frames.

    ``coverage`` is the fraction of frames that had at least one neighbour (the others are left
    out of accuracy and kappa).
    """
    out: dict = {}
    y_true = np.asarray(y_true, dtype=np.int64)
    for k in ks:
        per_mode = {}
        for mode in modes:
            pred = fallback_scores(neighbor_labels[:, :k], distances[:, :k], n_classes, mode)
            ok = pred >= 0
            entry = {"coverage": float(ok.mean()) if len(ok) else float("nan"), "n": int(ok.sum())}
            if ok.any():
                entry["accuracy"] = accuracy(y_true[ok], pred[ok], n_classes)
                entry["qwk"] = quadratic_weighted_kappa(y_true[ok], pred[ok], n_classes)
            else:
                entry["accuracy"] = entry["qwk"] = float("nan")
            per_mode[mode] = entry
        out[f"k={k}"] = per_mode
    return out


def _query_vectors(space, index: SimilarityIndex, preds, frame_index_csv) -> np.ndarray:
    all_rows = np.arange(len(preds))
    if space != "tsne":
        # the raw vectors' size is the index's own (what its items were built with)
        raw_size = int(index.meta["params"]["raw_size"]) if space == "raw" else None
        return np.ascontiguousarray(_space_vectors(space, preds, all_rows, frame_index_csv, raw_size), np.float32)
    # indexed frames keep their fitted map position; every other frame is placed by transform
    mask, fitted = index.vectors_of_frames(preds.frame_id)
    out = np.empty((len(preds), 2), dtype=np.float32)
    out[mask] = fitted
    if (~mask).any():
        out[~mask] = place_on_tsne_map(index.tsne, preds.embedding_all[~mask])
    return out


def run_query_neighbors(
    space: str,
    predictions_h5,
    frame_index_csv,
    ann,
    ids,
    meta,
    tsne_pkl,
    out_h5,
    config: dict,
) -> dict:
    """Neighbours of every frame of the run, written to ``R/neighbors/{backbone}/{space}.h5``.

    Returns the metrics also stored (JSON) in the file's ``metrics`` attribute.
    """
    s = similarity_settings(config)
    index = SimilarityIndex.load(ann, ids, meta, tsne_pkl)
    if index.space != space:
        raise ValueError(f"{meta} describes space {index.space!r}, expected {space!r}")
    preds = read_predictions(predictions_h5)
    leaked = set(index.ids["patient"].astype(str)) & set(preds.patient[preds.split == "test"])
    if leaked:
        raise ValueError(f"test patients in the {space} index: {sorted(leaked)}")
    ks = sorted({int(k) for k in s["k"]})
    k_max = ks[-1]

    t0 = time.perf_counter()
    vectors = _query_vectors(space, index, preds, frame_index_csv)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    nb_frame, nb_label, nb_dist = index.query(vectors, preds.patient, k_max)
    t_query = time.perf_counter() - t0

    metrics: dict = {
        "space": space,
        "metric": index.metric,
        "n_items": int(index.annoy.get_n_items()),
        "n_frames": len(preds),
        "k": ks,
        "fallback": list(s["fallback"]),
        "search_k": index.search_k,
        "features_seconds": round(t_features, 3),
        "query_ms_per_frame": round(1000 * t_query / max(len(preds), 1), 4),
    }
    for split in ("test", "train"):
        rows = np.flatnonzero(preds.split == split)
        metrics[split] = {
            "n_frames": len(rows),
            "n_patients": len(set(preds.patient[rows])),
            "knn": knn_metrics(
                preds.label[rows], nb_label[rows], nb_dist[rows], ks, s["fallback"], s["n_classes"]
            ),
        }

    # annoy against exact search, on (a seeded sample of) the test frames, or all frames if none
    rows = np.flatnonzero(preds.split == "test")
    if len(rows) == 0:
        rows = np.arange(len(preds))
    n_recall = int(s["recall_queries"])
    if 0 < n_recall < len(rows):
        rows = np.sort(np.random.default_rng(s["seed"]).choice(rows, n_recall, replace=False))
    _, exact_d = exact_search(
        index.item_vectors(),
        vectors[rows],
        k_max,
        index.metric,
        index.ids["patient"].astype(str),
        preds.patient[rows],
    )
    metrics["recall"] = {
        "n_queries": len(rows),
        **{f"recall@{k}": recall_at_k(nb_dist[rows, :k], exact_d[:, :k]) for k in ks},
    }

    lists = {"none": (nb_frame, nb_label, nb_dist)}
    if stored_list_diversities(s):
        frame_index = read_frame_index(frame_index_csv)
        for diversity in stored_list_diversities(s):
            groups = index.groups_of_items(frame_index, diversity)
            lists[diversity] = index.query_diverse(vectors, preds.patient, k_max, groups)
    write_neighbors(
        out_h5,
        preds.frame_id,
        lists,
        {
            "space": space,
            "k_max": k_max,
            "metric": index.metric,
            "backbone": str(index.meta.get("backbone", preds.attrs.get("backbone", ""))),
            "metrics": json.dumps(metrics, sort_keys=True, default=float),
            "config": config_json(config),
        },
    )
    return metrics
