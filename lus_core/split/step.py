"""The `balance_split` step: R/frame_index.csv -> R/split.json (see docs/architecture.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.io_utils import config_json, write_json
from lus_core.split.folds import check_folds, natural_sorted, patient_folds
from lus_core.split.search import balanced_split

log = logging.getLogger(__name__)

_REQUIRED = ("frame_id", "patient", "label")


def patient_class_counts(frames: pd.DataFrame, n_classes: int, classes: list | None = None) -> pd.DataFrame:
    """Frames per (patient, class index): index = naturally sorted patient ids, columns 0..C-1."""
    labels = pd.to_numeric(frames["label"], errors="coerce")
    bad = frames.loc[labels.isna() | (labels % 1 != 0) | (labels < 0) | (labels >= n_classes), "label"]
    if len(bad):
        raise ValueError(f"frame labels must be class indices 0..{n_classes - 1}; found {sorted(set(bad.astype(str)))[:10]}")
    patients = frames["patient"].astype(str)
    if (patients.str.len() == 0).any() or frames["patient"].isna().any():
        raise ValueError("some frames have no patient id")
    order = natural_sorted(patients.unique())
    counts = pd.crosstab(patients, labels.astype(np.int64))
    counts = counts.reindex(index=order, columns=range(n_classes), fill_value=0).astype(np.int64)
    counts.index.name, counts.columns.name = "patient", "label"
    empty = [c for c in range(n_classes) if counts[c].sum() == 0]
    if empty:
        names = ", ".join(f"{classes[c]!r} (index {c})" if classes else str(c) for c in empty)
        raise ValueError(f"class {names} has no frames in any patient: the test set cannot be balanced over "
                         "it; remove it from config['classes'] or add videos with that score")
    return counts


def run_balance_split(frame_index_csv: str, split_json: str, config: dict, n_jobs: int | None = None) -> dict:
    """Choose the test patients (exact balanced search) and the CV folds; write split.json.

    Reads the frame index (columns frame_id, video, patient, frame, label, ...; label = class
    index into config["classes"]), counts frames per patient and class, runs `balanced_split`
    with config["split"] (k_test, objective, force_test, force_train, min_test_frames_per_class,
    max_combinations), makes `patient_folds` (n_folds, config["seed"]) over the training
    patients, checks that folds and test set are disjoint, and writes split.json atomically.
    Returns the written dict (as JSON reads it back: class-index keys are strings).
    n_jobs: search threads (pass the rule's `threads`); default: every CPU this process may use.
    """
    classes = list(config["classes"])
    sp = config["split"]
    seed = int(config["seed"])
    frames = pd.read_csv(frame_index_csv, dtype={"patient": str, "video": str})
    missing = [c for c in _REQUIRED if c not in frames.columns]
    if missing:
        raise ValueError(f"{frame_index_csv} lacks column(s) {missing}")
    if frames.empty:
        raise ValueError(f"{frame_index_csv} has no frames")
    counts = patient_class_counts(frames, len(classes), classes)
    log.info("balance_split: %d frames, %d patients, classes %s, per-class frames %s", len(frames),
             len(counts), classes, counts.sum().tolist())
    res = balanced_split(
        counts,
        k=int(sp["k_test"]),
        objective=str(sp["objective"]),
        force_test=[str(p) for p in sp["force_test"]],
        force_train=[str(p) for p in sp["force_train"]],
        min_test_per_class=int(sp["min_test_frames_per_class"]),
        max_combinations=float(sp["max_combinations"]),
        n_jobs=n_jobs,
    )
    test = natural_sorted(res.test_patients)
    train = natural_sorted(res.train_patients)
    train_frames = frames[frames["patient"].astype(str).isin(set(train))]
    folds = patient_folds(train_frames["label"].to_numpy(np.int64), train_frames["patient"].to_numpy(),
                          int(sp["n_folds"]), seed)
    check_folds(folds, train, test)
    if set(test) & set(train) or set(test) | set(train) != set(counts.index):
        raise AssertionError("test and training patients must partition the cohort")
    out = {
        "test_patients": test,
        "train_patients": train,
        "folds": folds,
        "objective": res.objective,
        "objective_value": res.objective_value,
        "test_counts": {str(c): n for c, n in res.test_counts.items()},
        "train_counts": {str(c): n for c, n in res.train_counts.items()},
        "n_combinations": res.n_combinations,
        "n_evaluated": res.n_evaluated,
        "method": res.method,
        "seconds": round(res.seconds, 4),
        "k": int(sp["k_test"]),
        "seed": seed,
        "config": config_json(config),
    }
    write_json(Path(split_json), out)
    log.info("balance_split: test %s (%s = %.4g, counts %s), %d folds -> %s", test, res.objective,
             res.objective_value, res.test_counts, len(folds), split_json)
    return out
