"""Choosing the deployed configuration on the training patients only.

Every deployable configuration (CNN alone, fallback only, combined) is scored on the training
patients' frames, out of fold:

- the CNN's score is its out-of-fold softmax (``predictions/{backbone}.h5``, ``split == train``:
  made by the fold model that did not train on the frame's patient);
- the trust decision is the confidence table's training rows: cross-fitted confidence, and a
  threshold chosen without the row's fold (lus_core.confidence.step);
- the fallback is the neighbour file's training rows: nearest indexed (training) frames of
  *other* patients, in the same space the test frames are searched in.

A configuration is a candidate only if its validation score really is out of fold. The
similarity spaces ``embedding`` and ``tsne`` and the ``trust_score`` confidence place training
frames with the ``all`` model's embedding; when that embedding is *learned* (the encoder trains,
i.e. not a frozen pretrained encoder with ``finetune: head``), the ``all`` model trained on those
very frames, so their validation scores are in-sample and optimistic. Such rows get
``val_out_of_fold = False`` and are not candidates (their validation scores are still shown).

The configuration with the best validation ``criterion`` (``evaluate.selection.criterion``;
QWK by default, the scores being ordinal) is *selected*.  Ties are broken by :data:`TIE_BREAK`.
No test-patient value enters this module; the test score of the selected configuration is read
afterwards, once, from the matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lus_core import metrics as M

from .matrix import CONFIG_COLUMNS, MAIN_METRICS, config_id, deployable_scores

__all__ = ["CRITERIA", "TIE_BREAK", "COMPLEXITY", "validation_table", "select_configuration"]

CRITERIA = MAIN_METRICS
# fewer moving parts first: a simpler configuration wins a tie
COMPLEXITY = {"cnn": 0, "fallback_only": 1, "combined": 2}
TIE_BREAK = ("higher validation criterion, then fewer moving parts (CNN alone < fallback only < "
             "combined), then lower validation fallback rate, then config_id (alphabetical)")
VAL_COLUMNS = tuple(f"val_{m}" for m in MAIN_METRICS) + (
    "val_fallback_rate", "val_n_frames", "val_n_patients", "val_out_of_fold")
# parts of a configuration that read training frames through the `all` model's embedding
ALL_MODEL_SPACES = ("embedding", "tsne")
ALL_MODEL_METHODS = ("trust_score",)


def in_sample(meta: Mapping, learned_embedding: Mapping[str, bool]) -> bool:
    """True when a configuration's validation reads training frames through an embedding that
    the `all` model learned on those same frames (see the module doc)."""
    if not learned_embedding.get(meta["backbone"], True):
        return False
    return meta.get("space") in ALL_MODEL_SPACES or meta.get("confidence") in ALL_MODEL_METHODS


def validation_table(
    y: np.ndarray,
    patient: np.ndarray,
    cnn_pred: Mapping[str, np.ndarray],
    trusted: Mapping[tuple[str, str], np.ndarray],
    neigh: Mapping[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    ks, modes, n_classes: int,
    learned_embedding: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """One row per deployable configuration: ``config_id``, ``row_type`` and the ``val_*`` metrics
    on the training frames (all arrays aligned to the training frames). ``learned_embedding``:
    backbone -> whether its embedding is learned (default: yes, the cautious answer)."""
    learned_embedding = learned_embedding or {}
    rows = []
    n_pat = len(np.unique(patient))
    for b, cnn in cnn_pred.items():
        trusted_by = {m: t for (bb, m), t in trusted.items() if bb == b}
        neigh_by = {(s, d): nb for (bb, s, d), nb in neigh.items() if bb == b}
        for cfg, pred, trust in deployable_scores(cnn, trusted_by, neigh_by, ks, modes, n_classes):
            cm = M.confusion_matrix(y, pred, n_classes)
            meta = {"row_type": "", "backbone": b, "confidence": "", "space": "", "k": None, "fallback": "",
                    "diversity": ""}
            meta.update(cfg)
            row = {"config_id": config_id(meta), **{c: meta[c] for c in CONFIG_COLUMNS}}
            row.update({f"val_{m}": float(M.CM_METRICS[m](cm)) for m in MAIN_METRICS})
            row["val_fallback_rate"] = float((~trust).mean()) if len(trust) else float("nan")
            row["val_n_frames"] = int(len(y))
            row["val_n_patients"] = n_pat
            row["val_out_of_fold"] = not in_sample(meta, learned_embedding)
            rows.append(row)
    return pd.DataFrame(rows)


def select_configuration(val: pd.DataFrame, criterion: str) -> pd.Series:
    """The row of ``val`` with the best ``val_{criterion}`` (see :data:`TIE_BREAK`)."""
    if criterion not in CRITERIA:
        raise ValueError(f"selection criterion {criterion!r} not in {CRITERIA}")
    if "val_out_of_fold" in val:
        val = val[val["val_out_of_fold"].astype(bool)]
    if val.empty:
        raise ValueError("no deployable configuration with an out-of-fold validation score to select from")
    key = val.assign(
        _score=val[f"val_{criterion}"].fillna(-np.inf),
        _parts=val["row_type"].map(COMPLEXITY),
    )
    order = key.sort_values(["_score", "_parts", "val_fallback_rate", "config_id"],
                            ascending=[False, True, True, True], kind="stable")
    return val.loc[order.index[0]]
