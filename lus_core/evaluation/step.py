"""The ``evaluate`` step: the matrix on the test patients, the configuration chosen on the
training patients, ``eval/matrix.csv``, ``eval/summary.json`` and the figures."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core import metrics as M
from lus_core.backbone_settings import embedding_is_learned
from lus_core.config import validate_config
from lus_core.io_utils import atomic_path, read_json, write_json
from lus_core.predictions import Predictions, read_predictions
from lus_core.similarity.neighbors import read_neighbors, stored_diversities
from lus_core.skipped import skipped_summary
from lus_core.video_table import read_video_table, video_metrics

from .findings import findings_table
from .inputs import check_neighbours_are_training_frames, load_confidence
from .matrix import ROW_TYPES, TestSet, evaluate_matrix
from .selection import VAL_COLUMNS, select_configuration, validation_table
from .summary import (
    clean_json,
    confidence_table,
    dataset_counts,
    row_summary,
    selected_entry,
    significance_statement,
    winners_curse,
)

log = logging.getLogger(__name__)

__all__ = ["run_evaluate", "inputs_from_keys", "CHOSEN_ON"]

CHOSEN_ON = (
    "the training patients only, out of fold ({n_frames} frames of {n_patients} patients): the CNN's "
    "out-of-fold softmax (fold models that did not train on the frame's patient), cross-fitted confidence "
    "with a trust threshold chosen without the frame's fold, and fallback neighbours among training frames "
    "of other patients in the space the test frames are searched in; configurations that would read training "
    "frames through an embedding the `all` model learned on them (embedding / tsne spaces, trust score, "
    "unless the encoder is frozen) are not candidates; criterion {criterion}, {n_candidates} candidate "
    "configurations; no test-patient value was read"
)


def _safe_name(x) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(x))


def _part(p: Predictions, mask: np.ndarray) -> Predictions:
    """Rows of ``mask`` in frame_id order."""
    idx = np.flatnonzero(mask)
    return p.subset(idx[np.argsort(p.frame_id[idx], kind="stable")])


def _check_predictions(preds_full: Mapping[str, Predictions], test_patients: list[str]) -> None:
    ref = None
    for p in preds_full.values():
        is_test = p.split == "test"
        got = sorted(set(p.patient[is_test]))
        if got != test_patients:
            raise ValueError(f"predictions {p.path}: test patients {got} differ from split.json {test_patients}")
        leak = set(p.patient[~is_test]) & set(test_patients)
        if leak:
            raise ValueError(f"predictions {p.path}: test patient(s) {sorted(leak)} have frames marked 'train'")
        unknown = set(np.unique(p.split)) - {"train", "test"}
        if unknown:
            raise ValueError(f"predictions {p.path}: unexpected split values {sorted(unknown)}")
        key = (np.sort(p.frame_id), p.label[np.argsort(p.frame_id, kind="stable")])
        if ref is None:
            ref = (p, key)
        elif not (np.array_equal(ref[1][0], key[0]) and np.array_equal(ref[1][1], key[1])):
            raise ValueError(f"predictions {ref[0].path} and {p.path} disagree on the frames or their labels")


def inputs_from_keys(input_keys: str | Mapping, named: Mapping[str, str]) -> tuple[dict, dict, dict]:
    """(predictions, confidence, neighbors) mappings for :func:`run_evaluate` from the rule's
    named inputs and its ``input_keys`` (rules/common.smk: evaluate_input_keys), checked both ways:
    every listed name must be an input, and no predictions/scores/summary/neighbors input may be
    left unlisted."""
    keys = json.loads(input_keys) if isinstance(input_keys, str) else input_keys

    def get(name: str) -> str:
        if name not in named:
            raise KeyError(f"evaluate: input_keys names input {name!r}, which the rule does not have")
        return str(named[name])

    predictions = {b: get(k) for b, k in keys["predictions"].items()}
    confidence = {(b, m): (get(c), get(j)) for b, m, c, j in keys["confidence"]}
    neighbors = {(b, s): get(k) for b, s, k in keys["neighbors"]}
    listed = set(keys["predictions"].values()) | {k for row in keys["confidence"] for k in row[2:]} | {
        row[2] for row in keys["neighbors"]}
    unlisted = sorted(n for n in named if n.startswith(("predictions_", "scores_", "summary_", "neighbors_"))
                      and n not in listed)
    if unlisted:
        raise KeyError(f"evaluate: inputs {unlisted} are not in input_keys")
    return predictions, confidence, neighbors


def run_evaluate(
    predictions: Mapping[str, str | os.PathLike],
    confidence: Mapping[tuple[str, str], tuple[str | os.PathLike, str | os.PathLike]],
    neighbors: Mapping[tuple[str, str], str | os.PathLike],
    split_json: str | os.PathLike,
    frame_index_csv: str | os.PathLike,
    out_matrix_csv: str | os.PathLike,
    out_summary_json: str | os.PathLike,
    out_dir_figures: str | os.PathLike,
    config: Mapping,
    *,
    figures: bool = True,
    video_tables: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Score every configuration on the test patients, select one on the training patients;
    write matrix.csv, summary.json and figures.

    predictions: backbone -> predictions/{backbone}.h5
    confidence: (backbone, method) -> (confidence/{b}/{m}.csv, confidence/{b}/{m}.json)
    neighbors: (backbone, space) -> neighbors/{b}/{space}.h5
    config: the run's config; settings are read from it after validation against
    lus_core/config_schema.yaml (so the schema's defaults are the only defaults).
    figures: False skips the png files (tests, quick runs).
    video_tables: backbone -> video/{backbone}.csv (lus_core.video_model): the video-level table
    (fixed aggregations and the learned score; test with patient intervals, training out of fold).
    Returns the matrix (sorted by test accuracy: exploratory).
    """
    cfg = validate_config(copy.deepcopy(dict(config)), source="evaluate config")
    classes = list(cfg["classes"])
    class_names = [_safe_name(c) for c in classes]
    n_classes = len(classes)
    seed = int(cfg["seed"])
    ev = cfg["evaluate"]
    n_boot, ci, criterion = int(ev["n_bootstrap"]), float(ev["ci"]), ev["selection"]["criterion"]
    ks = [int(k) for k in cfg["similarity"]["k"]]
    modes = list(cfg["similarity"]["fallback"])
    split = read_json(split_json)
    test_patients = sorted(map(str, split["test_patients"]))

    if not predictions:
        raise ValueError("no predictions given")
    preds_full = {b: read_predictions(p) for b, p in sorted(predictions.items())}
    _check_predictions(preds_full, test_patients)
    test = {b: _part(p, p.split == "test") for b, p in preds_full.items()}
    train = {b: _part(p, p.split == "train") for b, p in preds_full.items()}
    ref, ref_train = next(iter(test.values())), next(iter(train.values()))
    if ref.label.size and (ref.label.min() < 0 or ref.label.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}: are they class indices?")

    counts = M.patient_resample_counts(len(test_patients), n_boot, seed)
    ts = TestSet(ref.frame_id, ref.label, ref.patient, ref.video, n_classes, counts, ci)

    conf_full, conf_json, conf_test, trusted_train = {}, {}, {}, {}
    for (b, m), (csv_path, json_path) in sorted(confidence.items()):
        if b not in test:
            raise ValueError(f"confidence {csv_path}: backbone {b!r} has no predictions")
        cval, trusted, set_size = load_confidence(csv_path, ts.frame_id)
        conf_full[(b, m)] = (cval, trusted, set_size)
        conf_test[(b, m)] = (cval, trusted)
        trusted_train[(b, m)] = load_confidence(csv_path, ref_train.frame_id)[1]
        try:
            conf_json[(b, m)] = read_json(json_path) if json_path else {}
        except (OSError, ValueError) as e:
            log.warning("confidence json %s unreadable: %s", json_path, e)
            conf_json[(b, m)] = {}
    # one neighbour list per (backbone, space, diversity): the fallback's lists are a matrix dimension
    # (similarity.fallback_diversity); the galleries show the similarity.diversity list when stored
    diversities = list(cfg["similarity"]["fallback_diversity"])
    gallery_diversity = str(cfg["similarity"]["diversity"])
    neigh_full, neigh_test, neigh_train, neigh_gallery = {}, {}, {}, {}
    for (b, s), path in sorted(neighbors.items()):
        if b not in test:
            raise ValueError(f"neighbors {path}: backbone {b!r} has no predictions")
        stored = stored_diversities(path)
        for d in dict.fromkeys([*diversities, gallery_diversity if gallery_diversity in stored else "none"]):
            t = read_neighbors(path, ts.frame_id, diversity=d)
            check_neighbours_are_training_frames(path, ts.patient, t.neighbor_frame_id, ref_train.frame_id,
                                                 ref_train.patient)
            lists = (t.neighbor_frame_id, t.neighbor_label, t.distance)
            if d == gallery_diversity or (d == "none" and gallery_diversity not in stored):
                neigh_gallery[(b, s)] = lists
            if d not in diversities:
                continue
            neigh_full[(b, s, d)] = lists
            neigh_test[(b, s, d)] = (t.neighbor_label, t.distance)
            v = read_neighbors(path, ref_train.frame_id, diversity=d)
            check_neighbours_are_training_frames(path, ref_train.patient, v.neighbor_frame_id, ref_train.frame_id,
                                                 ref_train.patient)
            neigh_train[(b, s, d)] = (v.neighbor_label, v.distance)

    cnn_test = {b: p.pred for b, p in test.items()}
    matrix = evaluate_matrix(cnn_test, conf_test, neigh_test, ts, ks, modes, class_names)

    # the selection sees training-patient arrays only
    learned = {b: embedding_is_learned(cfg, b) for b in train}
    val = validation_table(ref_train.label, ref_train.patient, {b: p.pred for b, p in train.items()},
                           trusted_train, neigh_train, ks, modes, n_classes, learned)
    chosen = select_configuration(val, criterion)
    matrix = matrix.merge(val.drop(columns="row_type"), on="config_id", how="left", validate="one_to_one")
    matrix["selected"] = matrix["config_id"] == chosen["config_id"]
    with atomic_path(out_matrix_csv) as tmp:
        matrix.to_csv(tmp, index=False)

    records = matrix.to_dict("records")
    sel_row = next(r for r in records if r["selected"])
    combined = [r for r in records if r["row_type"] == "combined"]
    best = combined[0] if combined else None
    n_combined = len(combined)
    chosen_on = CHOSEN_ON.format(n_frames=len(ref_train.frame_id), n_patients=len(set(ref_train.patient)),
                                 criterion=criterion, n_candidates=int(val["val_out_of_fold"].sum()))
    summary: dict = {
        "selected": selected_entry(sel_row, criterion, int(val["val_out_of_fold"].sum()), chosen_on),
        "winners_curse": winners_curse(matrix, sel_row["config_id"], criterion),
        "best": row_summary(best) if best else None,
        "cnn_alone": {r["backbone"]: row_summary(r) for r in records if r["row_type"] == "cnn"},
        "best_per_row_type": {},
        "significance": {
            "n_configurations": n_combined,
            "n_significantly_better": int(sum(bool(r["delta_accuracy_significant"]) and r["delta_accuracy"] > 0
                                              for r in combined)),
            "n_significantly_worse": int(sum(bool(r["delta_accuracy_significant"]) and r["delta_accuracy"] < 0
                                             for r in combined)),
            "best_gain_accuracy": None,
            "best_p_value_bonferroni": None,
            "statement": significance_statement(best, n_combined, n_boot, ci),
        },
        "counts": {
            "n_test_frames": int(len(ts.y)),
            "n_test_patients": int(ts.n_patients),
            "n_test_videos": int(ts.n_videos),
            "n_validation_frames": int(len(ref_train.frame_id)),
            "n_validation_patients": int(len(set(ref_train.patient))),
            "test_class_counts": np.bincount(ts.y, minlength=n_classes).tolist(),
            "rows": int(len(matrix)),
            "rows_per_type": {t: int((matrix["row_type"] == t).sum()) for t in ROW_TYPES},
            "backbones": list(test),
            "confidence_methods": sorted({m for (_, m) in conf_test}),
            "spaces": sorted({key[1] for key in neigh_test}),
            "fallback_diversity": diversities,
            "k": ks,
            "fallback_modes": modes,
            "dataset": dataset_counts(frame_index_csv, split, n_classes),
        },
        "test_patients": test_patients,
        "classes": classes,
        "n_bootstrap": n_boot,
        "ci": ci,
        "seed": seed,
        "confidence_methods": confidence_table(ts, cnn_test, conf_full, conf_json),
        "fallback_function": "lus_core.similarity.fallback.fallback_scores",
        "matrix_csv": os.path.relpath(out_matrix_csv, Path(out_summary_json).parent),
        "matrix_order": "test accuracy, best first: exploratory (the deployed configuration is `selected`)",
        "validation_columns": list(VAL_COLUMNS),
        "figures": [],
        "galleries": [],
        "config": dict(config),
        # skipped_videos.csv sits beside frame_index.csv (both written by frame_index)
        "skipped_videos": skipped_summary(Path(frame_index_csv).parent),
    }
    if video_tables:
        summary["video_level"] = {
            b: video_metrics(read_video_table(path, test_patients), n_classes, n_boot, ci, seed).to_dict("records")
            for b, path in sorted(video_tables.items())
        }
    if any(p.finding_names for p in preds_full.values()):
        summary["findings"] = findings_table(preds_full, n_boot, ci, seed).to_dict("records")
    for t in ROW_TYPES:
        sub = [r for r in records if r["row_type"] == t]
        if sub:
            summary["best_per_row_type"][t] = row_summary(sub[0])
    if best:
        summary["significance"]["best_gain_accuracy"] = {
            k: row_summary(best)[k] for k in
            ("delta_accuracy", "delta_accuracy_lo", "delta_accuracy_hi", "delta_accuracy_p",
             "delta_accuracy_significant")
        }
        summary["significance"]["best_p_value_bonferroni"] = min(1.0, float(best["delta_accuracy_p"]) * n_combined)

    if figures:
        from . import figures as F  # matplotlib only when drawing

        # galleries show a configuration with a fallback: the selected one, else the combined
        # configuration with the best validation score
        gal = sel_row if sel_row["row_type"] == "combined" else None
        if gal is None and combined:
            key = f"val_{criterion}"
            gal = max(combined, key=lambda r: (r[key] if r[key] == r[key] else -np.inf))
        figs, gals = F.evaluation_figures(
            matrix=matrix, ts=ts, cnn_test=cnn_test, preds_full=preds_full, conf_full=conf_full,
            neigh_full=neigh_full, neigh_gallery=neigh_gallery, frame_index_csv=frame_index_csv,
            out_dir=out_dir_figures,
            class_names=[str(c) for c in classes], selected=sel_row, gallery_config=gal, seed=seed,
            n_gallery=int(ev["n_gallery"]), tsne_max_points=int(ev["tsne_max_points"]),
            raw_size=int(cfg["similarity"]["raw_size"]),
        )
        base = Path(out_summary_json).parent
        summary["figures"] = [{**f, "file": os.path.relpath(f["file"], base)} for f in figs]
        summary["galleries"] = [{**g, "file": os.path.relpath(g["file"], base)} for g in gals]

    write_json(out_summary_json, clean_json(summary))
    return matrix

