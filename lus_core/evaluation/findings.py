"""How well the auxiliary finding outputs (A-lines, B-lines, ...) recognise their findings: AUROC.

Per finding (`dataset.findings`), backbone and level:

- frame level: each frame with a known value (1 yes / 0 no; unknown frames are left out), its
  probability from the model that scored its softmax (out-of-fold for training patients);
- video level: a video shows the finding when any of its known frames does (COVID-BLUES labels
  whole videos, so this is the video's label), and its probability is the mean over its frames.

On the test patients with a patient-bootstrap interval (patients resampled with replacement, the
frames of one patient together, the resamples of `lus_core.metrics.patient_resample_counts`),
and on the training patients out-of-fold (`val_auroc`: what a choice may look at). AUROC is
`lus_core.confidence.failure_metrics.failure_auroc` (the Mann-Whitney statistic, ties 1/2); the bootstrap
evaluates it on every resample at once by weighting each frame by its patient's draw count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lus_core.cnn.predictions import Predictions
from lus_core.confidence.failure_metrics import failure_auroc
from lus_core.metrics import ci_from_samples, patient_resample_counts

LEVELS = ("frame", "video")
COLUMNS = ["backbone", "finding", "level", "auroc", "auroc_lo", "auroc_hi", "n_test", "n_test_positive",
           "val_auroc", "n_val", "n_val_positive"]


def weighted_auroc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under item weights, for each row of `weights` (B, N) at once: the weighted share of
    (positive, negative) pairs ranked right, ties 1/2. Integer weights w equal repeating each item
    w times. NaN for a row without positive or without negative weight."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], positive[order].astype(bool)
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    pos_w = np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1)
    neg_w = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w  # negative weight strictly below each group
    pairs = pos_w.sum(1) * neg_w.sum(1)
    right = (pos_w * (below + 0.5 * neg_w)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, right / np.where(pairs > 0, pairs, 1.0), np.nan)


def video_level(p: Predictions, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, positive, patient) per video with a known value of finding j."""
    frame = pd.DataFrame({"video": p.video, "patient": p.patient, "prob": p.findings[:, j],
                          "value": p.finding_labels[:, j].astype(int)})
    frame["known_value"] = frame["value"].where(frame["value"] >= 0)
    videos = frame.groupby("video", sort=True).agg(prob=("prob", "mean"), value=("known_value", "max"),
                                                   patient=("patient", "first"))
    videos = videos[videos["value"].notna()]
    return videos["prob"].to_numpy(np.float64), videos["value"].to_numpy() > 0, videos["patient"].to_numpy(str)


def frame_level(p: Predictions, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    known = p.finding_labels[:, j] >= 0
    return p.findings[known, j].astype(np.float64), p.finding_labels[known, j] > 0, np.asarray(p.patient)[known]


def auroc_with_interval(score, positive, patients, n_boot: int, ci: float, seed: int) -> tuple[float, float, float]:
    """(AUROC, lo, hi): the estimate and its patient-bootstrap percentile interval."""
    estimate = failure_auroc(score, positive) if len(score) else float("nan")
    if not len(score):
        return estimate, float("nan"), float("nan")
    uniq, codes = np.unique(patients, return_inverse=True)
    counts = patient_resample_counts(len(uniq), n_boot, seed)
    samples = np.concatenate([weighted_auroc(score, positive, counts[b : b + 250][:, codes.ravel()])
                              for b in range(0, n_boot, 250)])
    res = ci_from_samples(estimate, samples, ci)
    return res.estimate, res.lo, res.hi


def findings_table(preds: dict[str, Predictions], n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """One row per (backbone, finding, level): test AUROC with interval, training AUROC out-of-fold."""
    rows = []
    for backbone, p in sorted(preds.items()):
        test, train = p.subset(p.split == "test"), p.subset(p.split == "train")
        for j, name in enumerate(p.finding_names):
            for level in LEVELS:
                pick = frame_level if level == "frame" else video_level
                score, positive, patients = pick(test, j)
                auroc, lo, hi = auroc_with_interval(score, positive, patients, n_boot, ci, seed)
                v_score, v_positive, _ = pick(train, j)
                rows.append({
                    "backbone": backbone, "finding": name, "level": level, "auroc": auroc, "auroc_lo": lo,
                    "auroc_hi": hi, "n_test": len(score), "n_test_positive": int(positive.sum()),
                    "val_auroc": failure_auroc(v_score, v_positive) if len(v_score) else float("nan"),
                    "n_val": len(v_score), "n_val_positive": int(v_positive.sum()),
                })
    return pd.DataFrame(rows, columns=COLUMNS)


DISPLAY_HEADER = ["backbone", "finding", "level", "test AUROC", "test positive / known", "validation AUROC"]
DISPLAY_NOTE = ("AUROC of each auxiliary finding output (dataset.findings) against the labels' yes/no: test "
                "patients with a 95% bootstrap interval over patients; validation: the training patients, out "
                "of fold. A video's probability is the mean over its frames; it shows the finding when any of "
                "its frames is labelled so.")


def display_rows(records: list[dict], fmt_ci) -> list[list[str]]:
    """The summary's `findings` records as table rows (report and results documents);
    `fmt_ci(estimate, lo, hi)` formats an interval."""
    return [[r["backbone"], r["finding"], r["level"], fmt_ci(r["auroc"], r["auroc_lo"], r["auroc_hi"]),
             f"{r['n_test_positive']} / {r['n_test']}",
             "-" if r["val_auroc"] != r["val_auroc"] else f"{r['val_auroc']:.2f}"] for r in records]
