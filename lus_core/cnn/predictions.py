"""The predictions store ``R/predictions/{backbone}.h5``: its one dataclass, writer and reader.

Written once by the ``infer`` step (:mod:`lus_core.cnn.infer`); read by the confidence step,
the similarity steps and the evaluation.  Datasets (docs/architecture.md), one row per frame of
the run, rows in ``frame_id`` order:

==============  ================  =============================================================
dataset         dtype, shape      meaning
==============  ================  =============================================================
frame_id        int64 (N,)        id of frame_index.csv
label           int16 (N,)        true class index 0..C-1
patient, video  str (N,)
split           str (N,)          ``train`` / ``test`` (split.json)
fold            int16 (N,)        fold whose model scored the frame; -1 = the ``all`` model
logits          float32 (N, C)    out-of-fold for training frames, ``all`` model for test frames
softmax         float32 (N, C)    idem
embedding_oof   float32 (N, D)    penultimate features by the same model as ``softmax`` (K fold
                                  models for training frames: K different feature spaces)
embedding_all   float32 (N, D)    every frame embedded by the ``all`` model (one feature space;
                                  the similarity indexes and the trust score use it)
findings        float32 (N, F)    probability of each auxiliary finding (``dataset.findings``),
                                  by the same model as ``softmax``; F = 0 without findings
finding_labels  int8 (N, F)       the finding's value in the labels: 1 yes, 0 no, -1 unknown
==============  ================  =============================================================

attrs: ``backbone``, ``classes`` (JSON), ``finding_names`` (JSON, the F columns' names),
``models`` (JSON), ``config`` (JSON). A file without ``findings`` (older runs) reads as F = 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from lus_core.io_utils import atomic_path

__all__ = ["Predictions", "PredictionsFormatError", "read_predictions", "write_predictions", "REQUIRED"]

REQUIRED = ("frame_id", "label", "patient", "video", "split", "fold", "logits", "softmax",
            "embedding_oof", "embedding_all")
PER_FRAME_OPTIONAL = ("findings", "finding_labels")
_STR = h5py.string_dtype()


class PredictionsFormatError(ValueError):
    """A predictions file that does not follow the contract (e.g. written by an older version)."""


@dataclass
class Predictions:
    """One row per frame (see the module doc for each field)."""

    frame_id: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    video: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    logits: np.ndarray
    softmax: np.ndarray
    embedding_oof: np.ndarray
    embedding_all: np.ndarray
    findings: np.ndarray | None = None  # (N, F); None reads as no findings
    finding_labels: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        n = len(self.frame_id)
        if self.findings is None:
            self.findings = np.zeros((n, 0), np.float32)
        if self.finding_labels is None:
            self.finding_labels = np.full(self.findings.shape, -1, np.int8)

    def __len__(self) -> int:
        return len(self.frame_id)

    @property
    def finding_names(self) -> list[str]:
        return list(json.loads(self.attrs.get("finding_names", "[]")))

    @property
    def backbone(self) -> str:
        return str(self.attrs.get("backbone", Path(self.path).stem if self.path else ""))

    @property
    def pred(self) -> np.ndarray:
        """The CNN's score: argmax of the softmax (int64)."""
        return self.softmax.argmax(axis=1).astype(np.int64)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label

    def subset(self, rows) -> Predictions:
        """The rows ``rows`` (boolean mask or index array), same attrs and path."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in (*REQUIRED, *PER_FRAME_OPTIONAL):
            kw[name] = kw[name][rows]
        return Predictions(**kw)


def _strings(ds) -> np.ndarray:
    return np.asarray(ds.asstr()[()], dtype=object).astype(str)


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read a predictions file; a missing dataset is a :class:`PredictionsFormatError` naming it."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        missing = [name for name in REQUIRED if name not in f]
        if missing:
            hint = (" (an older version wrote `embedding`; the file predates `embedding_oof`)"
                    if "embedding_oof" in missing and "embedding" in f else "")
            raise PredictionsFormatError(
                f"{path}: predictions file lacks dataset(s) {missing}{hint}; rerun the `infer` step "
                f"(e.g. `snakemake --forcerun infer`) to rewrite it")
        n = len(f["frame_id"])
        bad = [name for name in REQUIRED if len(f[name]) != n]
        if bad:
            raise PredictionsFormatError(f"{path}: dataset(s) {bad} do not have {n} rows like frame_id")
        return Predictions(
            frame_id=f["frame_id"][()].astype(np.int64),
            label=f["label"][()].astype(np.int64),
            patient=_strings(f["patient"]),
            video=_strings(f["video"]),
            split=_strings(f["split"]),
            fold=f["fold"][()].astype(np.int64),
            logits=np.asarray(f["logits"][()], dtype=np.float64),
            softmax=np.asarray(f["softmax"][()], dtype=np.float64),
            embedding_oof=np.asarray(f["embedding_oof"][()], dtype=np.float32),
            embedding_all=np.asarray(f["embedding_all"][()], dtype=np.float32),
            findings=np.asarray(f["findings"][()], dtype=np.float32) if "findings" in f else None,
            finding_labels=f["finding_labels"][()].astype(np.int8) if "finding_labels" in f else None,
            attrs={k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
            path=str(path),
        )


def write_predictions(path: str | os.PathLike, p: Predictions) -> Path:
    """Write ``p`` atomically (rows sorted by frame_id, as the contract says)."""
    order = np.argsort(np.asarray(p.frame_id, dtype=np.int64), kind="stable")
    p = p.subset(order)
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("frame_id", data=p.frame_id.astype(np.int64))
        f.create_dataset("label", data=p.label.astype(np.int16))
        for name in ("patient", "video", "split"):
            f.create_dataset(name, data=np.asarray(getattr(p, name)).astype(str).tolist(), dtype=_STR)
        f.create_dataset("fold", data=p.fold.astype(np.int16))
        for name in ("logits", "softmax", "embedding_oof", "embedding_all"):
            f.create_dataset(name, data=np.asarray(getattr(p, name), dtype=np.float32))
        if p.findings.shape[1]:
            f.create_dataset("findings", data=np.asarray(p.findings, dtype=np.float32))
            f.create_dataset("finding_labels", data=np.asarray(p.finding_labels, dtype=np.int8))
        for k, v in p.attrs.items():
            f.attrs[k] = v if isinstance(v, str | int | float) else json.dumps(v, sort_keys=True)
    return path
