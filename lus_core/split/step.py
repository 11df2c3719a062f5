"""The `balance_split` step: R/frame_index.csv -> R/split.json (see docs/architecture.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.io_utils import config_json, write_json
from lus_core.split.folds import natural_sorted
from lus_core.split.outer import group_entry, outer_split
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

    With `split.outer_folds` K > 1 every patient is tested once: K disjoint test groups covering
    the cohort (lus_core.split.outer), each with inner folds on its training patients, and the
    deployed scope's folds over all patients (see lus_core.split.scopes). Returns the written
    dict (as JSON reads it back: class-index keys are strings).
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
    if int(sp["outer_folds"]) > 1:
        out = outer_split(frames, counts, sp, seed, n_jobs)
    else:
        out = _single_split(frames, counts, sp, seed, n_jobs)
    out["seed"] = seed
    out["config"] = config_json(config)
    write_json(Path(split_json), out)
    return out


def _single_split(frames: pd.DataFrame, counts: pd.DataFrame, sp: dict, seed: int, n_jobs) -> dict:
    """One balanced test group of split.k_test patients, inner folds on the rest."""
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
    out = {**group_entry(frames, counts, res.test_patients, res, int(sp["n_folds"]), seed), "outer_folds": 1}
    out["k"] = int(sp["k_test"])
    log.info("balance_split: test %s (%s = %.4g, counts %s), %d folds", out["test_patients"], res.objective,
             res.objective_value, res.test_counts, len(out["folds"]))
    return out
