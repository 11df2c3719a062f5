"""Patient-grouped, score-stratified cross-validation folds over the training patients."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

_NUM = re.compile(r"(\d+)")


def natural_key(s: str) -> tuple:
    """Sort key that orders embedded numbers by value: "P2" < "P10", "9" < "10" < "a".

    Numbers sort before text, text case-insensitively; remaining ties ("P1" / "p1", "1" / "01")
    are broken by the exact string, so the order is total and deterministic.
    """
    s = str(s)
    primary = tuple((0, int(chunk), "") if i % 2 else (1, 0, chunk.lower())
                    for i, chunk in enumerate(_NUM.split(s)) if chunk)
    return primary, s


def natural_sorted(items) -> list[str]:
    return sorted((str(x) for x in items), key=natural_key)


def patient_folds(frame_labels: Sequence[int] | np.ndarray, frame_patients: Sequence[str] | np.ndarray,
                  n_folds: int, seed: int) -> list[dict]:
    """Split the patients of these frames into `n_folds` patient-grouped folds, stratified by score.

    frame_labels: class index of every frame; frame_patients: its patient id (str). Pass the
    training patients' frames only. Uses sklearn's StratifiedGroupKFold(shuffle=True,
    random_state=seed), so the folds depend only on (label, patient) pairs and the seed.
    Returns [{"fold": i, "val_patients": [...], "train_patients": [...]}, ...] with naturally
    sorted patient lists; every patient is in exactly one validation fold (checked).
    """
    labels = np.asarray(frame_labels)
    patients = np.asarray([str(p) for p in frame_patients], dtype=object)
    if labels.shape[0] != patients.shape[0]:
        raise ValueError(f"{labels.shape[0]} frame labels but {patients.shape[0]} frame patients")
    n_folds = int(n_folds)
    unique = natural_sorted(set(patients.tolist()))
    if n_folds < 2:
        raise ValueError(f"split.n_folds must be >= 2, got {n_folds}")
    if n_folds > len(unique):
        raise ValueError(f"split.n_folds = {n_folds} folds need at least that many training patients, "
                         f"but there are {len(unique)}: lower split.n_folds or split.k_test")
    # feed the frames in a canonical order so the folds do not depend on row order
    rank = {p: i for i, p in enumerate(unique)}
    order = np.lexsort((labels, np.array([rank[p] for p in patients], dtype=np.int64)))
    labels, patients = labels[order], patients[order]
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
    folds = []
    for i, (tr, va) in enumerate(cv.split(np.zeros(len(labels)), labels, groups=patients)):
        val = natural_sorted(set(patients[va].tolist()))
        train = natural_sorted(set(patients[tr].tolist()))
        folds.append({"fold": i, "val_patients": val, "train_patients": train})
    check_folds(folds, unique)
    return folds


def check_folds(folds: list[dict], patients: Sequence[str], test_patients: Sequence[str] = ()) -> None:
    """Raise AssertionError unless the folds partition `patients` and never touch a test patient."""
    everyone = set(patients)
    seen: set[str] = set()
    test = set(test_patients)
    for f in folds:
        val, train = set(f["val_patients"]), set(f["train_patients"])
        if not val:
            raise AssertionError(f"fold {f['fold']} has no validation patient")
        if val & train:
            raise AssertionError(f"fold {f['fold']}: patients {sorted(val & train)} in both train and validation")
        if val | train != everyone:
            raise AssertionError(f"fold {f['fold']} does not cover exactly the training patients")
        if seen & val:
            raise AssertionError(f"patients {sorted(seen & val)} validate in more than one fold")
        if test & (val | train):
            raise AssertionError(f"test patients {sorted(test & (val | train))} appear in fold {f['fold']}")
        seen |= val
    if seen != everyone:
        raise AssertionError(f"patients {sorted(everyone - seen)} are in no validation fold")
