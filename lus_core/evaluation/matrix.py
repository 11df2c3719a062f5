"""The all-configurations matrix on the test patients (step ``evaluate``).

Every configuration backbone x confidence method x similarity space x k x fallback mode is
scored on the TEST patients, next to the framing rows that say what the numbers mean:

=================  =======================================================================
row_type           final score of a frame
=================  =======================================================================
cnn                the CNN's score (the classifier alone)
fallback_only      the similarity fallback's score for every frame
combined           the CNN's score where the confidence model trusts it, else the fallback's
oracle_detector    trust exactly the frames the CNN gets right, else our fallback
oracle_fallback    our confidence model, and an untrusted frame gets its true label
=================  =======================================================================

The first three are *deployable*; :func:`deployable_scores` makes their final scores from
arrays of any frame set, so the same code scores the test patients here and the training
patients (out of fold) in :mod:`lus_core.evaluation.selection`.

Uncertainty is a percentile bootstrap over test *patients* (frames of a patient are not
independent).  One patient-resample matrix is drawn once and shared by every row, so the
difference between any configuration and the CNN alone of the same backbone is a *paired*
bootstrap.  All rows are computed from per-patient confusion matrices, which makes 1000
resamples of ~500 rows a matter of seconds.  The matrix is sorted by test accuracy: an
exploratory view; the deployed configuration is chosen on training patients (selection.py).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lus_core import metrics as M
from lus_core.io_utils import atomic_path
from lus_core.similarity.fallback import fallback_scores

__all__ = ["TestSet", "ROW_TYPES", "DEPLOYABLE", "MAIN_METRICS", "DELTA_METRICS", "CONFIG_COLUMNS",
           "config_id", "deployable_scores", "evaluate_matrix"]

ROW_TYPES = ("cnn", "fallback_only", "combined", "oracle_detector", "oracle_fallback")
DEPLOYABLE = ("cnn", "fallback_only", "combined")
MAIN_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk")
DELTA_METRICS = MAIN_METRICS
CONFIG_COLUMNS = ("row_type", "backbone", "confidence", "space", "k", "fallback", "diversity")


@dataclass
class TestSet:
    """The test frames every row is scored on, and the shared patient resamples."""

    frame_id: np.ndarray
    y: np.ndarray
    patient: np.ndarray
    video: np.ndarray
    n_classes: int
    counts: np.ndarray  # (n_boot, n_patients)
    ci: float
    patients: np.ndarray = field(init=False)
    pcodes: np.ndarray = field(init=False)
    video_truth: dict = field(init=False)
    vcodes: np.ndarray = field(init=False)
    video_pcodes: np.ndarray = field(init=False)

    def __post_init__(self):
        self.patients, self.pcodes = np.unique(self.patient, return_inverse=True)
        self.pcodes = self.pcodes.ravel()
        vids, first, vcodes = np.unique(self.video, return_index=True, return_inverse=True)
        self.vcodes = vcodes.ravel()
        self.n_videos = len(vids)
        self.video_pcodes = self.pcodes[first]
        self.video_truth = {
            how: M.aggregate_by_group(self.y, self.vcodes, self.n_videos, how, self.n_classes)
            for how in M.VIDEO_AGGREGATIONS
        }

    @property
    def n_patients(self) -> int:
        return len(self.patients)


def _boot(ts: TestSet, pcm: np.ndarray) -> np.ndarray:
    """(n_boot, C, C) resampled confusion matrices."""
    p, c, _ = pcm.shape
    return (ts.counts @ pcm.reshape(p, c * c)).reshape(-1, c, c)


def _lo_hi(samples: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise percentile interval of (m, B) samples, NaN-aware."""
    a = (1.0 - ci) / 2.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(samples, [a, 1.0 - a], axis=-1)
    return q[0], q[1]


def _score_row(ts: TestSet, pred: np.ndarray, cnn_pred: np.ndarray, trusted: np.ndarray,
               cnn_samples: dict[str, np.ndarray] | None, class_names: list[str]) -> tuple[dict, dict]:
    """Metrics of one final prediction vector.  Returns (row dict, bootstrap samples of DELTA_METRICS)."""
    c = ts.n_classes
    pcm = M.per_patient_confusion(ts.y, pred, ts.pcodes, ts.n_patients, c)
    cm = pcm.sum(axis=0)
    boot = _boot(ts, pcm)
    row: dict = {}
    samples = {}
    ests, samps = [], []
    for name in MAIN_METRICS:
        fn = M.CM_METRICS[name]
        ests.append(float(fn(cm)))
        samps.append(fn(boot))
        samples[name] = samps[-1]
    lo, hi = _lo_hi(np.vstack(samps), ts.ci)
    for i, name in enumerate(MAIN_METRICS):
        row[name] = ests[i]
        row[f"{name}_lo"] = float(lo[i])
        row[f"{name}_hi"] = float(hi[i])

    # paired difference against the CNN alone of the same backbone (same resamples)
    for name in DELTA_METRICS:
        if cnn_samples is None:
            d_est, d = 0.0, np.zeros(ts.counts.shape[0])
        else:
            d_est = row[name] - float(M.CM_METRICS[name](cnn_samples["_cm"]))
            d = samples[name] - cnn_samples[name]
        pd_ = M.paired_from_samples(d_est, d, ts.ci)
        row[f"delta_{name}"] = pd_.diff
        row[f"delta_{name}_lo"] = pd_.lo
        row[f"delta_{name}_hi"] = pd_.hi
        row[f"delta_{name}_p"] = pd_.p_value
        row[f"delta_{name}_significant"] = pd_.significant

    rec = M.cm_per_class_recall(cm)
    for i, cname in enumerate(class_names):
        row[f"recall_{cname}"] = float(rec[i])

    # what the fallback did
    rejected = ~trusted
    n_rej = int(rejected.sum())
    cnn_ok = cnn_pred == ts.y
    fin_ok = pred == ts.y
    row["n_frames"] = int(len(pred))
    row["n_patients"] = int(ts.n_patients)
    row["fallback_rate"] = n_rej / len(pred) if len(pred) else float("nan")
    row["n_fallback"] = n_rej
    row["frames_fixed"] = int(np.sum(rejected & ~cnn_ok & fin_ok))
    row["frames_broken"] = int(np.sum(rejected & cnn_ok & ~fin_ok))
    row["cnn_acc_rejected"] = float(cnn_ok[rejected].mean()) if n_rej else float("nan")
    row["fallback_acc_rejected"] = float(fin_ok[rejected].mean()) if n_rej else float("nan")

    # video level: aggregate truth and prediction the same way over each video's frames
    vsamps, vnames = [], []
    for how in M.VIDEO_AGGREGATIONS:
        vp = M.aggregate_by_group(pred, ts.vcodes, ts.n_videos, how, c)
        vpcm = M.per_patient_confusion(ts.video_truth[how], vp, ts.video_pcodes, ts.n_patients, c)
        vcm = vpcm.sum(axis=0)
        for name in MAIN_METRICS:
            row[f"video_{how}_{name}"] = float(M.CM_METRICS[name](vcm))
        vsamps.append(M.cm_accuracy(_boot(ts, vpcm)))
        vnames.append(f"video_{how}_accuracy")
    lo, hi = _lo_hi(np.vstack(vsamps), ts.ci)
    for i, name in enumerate(vnames):
        row[f"{name}_lo"] = float(lo[i])
        row[f"{name}_hi"] = float(hi[i])
    row["n_videos"] = int(ts.n_videos)
    row["confusion_matrix"] = json.dumps(cm.tolist())
    samples["_cm"] = cm
    return row, samples


def config_id(row: Mapping) -> str:
    """A short human-readable name for a row's configuration."""
    rt = row["row_type"]
    b = row["backbone"]
    k = row.get("k")
    k_s = f"k={int(k)}" if k is not None and not (isinstance(k, float) and math.isnan(k)) and k is not pd.NA else ""
    div = row.get("diversity")
    if isinstance(div, str) and div not in ("", "none") and rt in ("fallback_only", "oracle_detector", "combined"):
        return f"{config_id({**row, 'diversity': ''})} · one per {div}"  # the fallback's diverse neighbour list
    if rt == "cnn":
        return f"{b} · CNN alone"
    if rt == "fallback_only":
        return f"{b} · fallback only · {row['space']} · {k_s} · {row['fallback']}"
    if rt == "oracle_detector":
        return f"{b} · ORACLE detector · {row['space']} · {k_s} · {row['fallback']}"
    if rt == "oracle_fallback":
        return f"{b} · {row['confidence']} · ORACLE fallback"
    return f"{b} · {row['confidence']} · {row['space']} · {k_s} · {row['fallback']}"


def deployable_scores(cnn: np.ndarray, trusted_by_method: Mapping[str, np.ndarray],
                      neighbours_by_space: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], ks, modes,
                      n_classes: int) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(configuration, final score, trusted) of every deployable configuration of one backbone.

    ``trusted_by_method[m]``: the trust decision per frame; ``neighbours_by_space[(space,
    diversity)]`` = (neighbour labels, distances), nearest first (diversity ``none``: the plain
    list; ``video`` / ``patient``: at most one neighbour per video / patient).  A frame without any
    valid neighbour keeps the CNN's score (there is nothing to fall back on).
    """
    n = len(cnn)
    yield {"row_type": "cnn", "confidence": "always", "fallback": "none"}, cnn, np.ones(n, dtype=bool)
    for (space, diversity), (nlab, ndist) in neighbours_by_space.items():
        for k in ks:
            if k > nlab.shape[1]:
                raise ValueError(f"neighbours of space {space} hold {nlab.shape[1]} per frame, config asks k={k}")
            for mode in modes:
                fb = np.asarray(fallback_scores(nlab[:, :k], ndist[:, :k], n_classes, mode), dtype=np.int64)
                fb = np.where(fb < 0, cnn, fb)
                sim = {"space": space, "k": int(k), "fallback": mode, "diversity": diversity}
                yield {"row_type": "fallback_only", "confidence": "never", **sim}, fb, np.zeros(n, dtype=bool)
                for m, trusted in trusted_by_method.items():
                    yield {"row_type": "combined", "confidence": m, **sim}, np.where(trusted, cnn, fb), trusted


def evaluate_matrix(
    cnn_pred: Mapping[str, np.ndarray],
    conf: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    neigh: Mapping[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    ts: TestSet,
    ks: list[int],
    modes: list[str],
    class_names: list[str],
) -> pd.DataFrame:
    """The matrix from arrays already aligned to ``ts.frame_id``, sorted by test accuracy.

    ``cnn_pred[backbone]``: the CNN's score of each test frame; ``conf[(backbone, method)] =
    (confidence, trusted)``; ``neigh[(backbone, space, diversity)] = (neighbor_label, distance)``
    sorted nearest first.
    """
    c = ts.n_classes
    rows: list[dict] = []
    for b, cnn in cnn_pred.items():
        cnn_ok = cnn == ts.y

        def add(cfg, pred, trusted, cnn_samples, *, b=b, cnn=cnn):
            r, s = _score_row(ts, pred, cnn, trusted, cnn_samples, class_names)
            meta = {"row_type": "", "backbone": b, "confidence": "", "space": "", "k": pd.NA, "fallback": "",
                    "diversity": ""}
            meta.update(cfg)
            rows.append({**meta, **r})
            return s

        trusted_by = {m: conf[(bb, m)][1] for (bb, m) in conf if bb == b}
        neigh_by = {(s, d): nb for (bb, s, d), nb in neigh.items() if bb == b}
        cnn_s = None
        for cfg, pred, trusted in deployable_scores(cnn, trusted_by, neigh_by, ks, modes, c):
            s = add(cfg, pred, trusted, cnn_s)
            if cfg["row_type"] == "cnn":
                cnn_s = s
            elif cfg["row_type"] == "fallback_only":  # the same fallback behind a perfect detector
                oracle = {**cfg, "row_type": "oracle_detector", "confidence": "oracle"}
                add(oracle, np.where(cnn_ok, cnn, pred), cnn_ok, cnn_s)
        for m, trusted in trusted_by.items():
            add({"row_type": "oracle_fallback", "confidence": m, "fallback": "oracle"},
                np.where(trusted, cnn, ts.y), trusted, cnn_s)

    df = pd.DataFrame(rows)
    df["k"] = df["k"].astype("Int64")
    df.insert(0, "config_id", [config_id(r) for r in df[list(CONFIG_COLUMNS)].to_dict("records")])
    type_order = {t: i for i, t in enumerate(ROW_TYPES)}
    df["_t"] = df["row_type"].map(type_order)
    df = df.sort_values(
        ["accuracy", "macro_f1", "qwk", "_t"], ascending=[False, False, False, True], kind="stable",
        na_position="last",
    ).drop(columns="_t").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    first = ["rank", "config_id", *CONFIG_COLUMNS]
    return df[first + [col for col in df.columns if col not in first]]


def write_matrix(matrix: pd.DataFrame, path) -> None:
    """``eval/matrix.csv``: one row per configuration (atomically)."""
    with atomic_path(path) as tmp:
        matrix.to_csv(tmp, index=False)


def read_matrix(path) -> pd.DataFrame:
    """``eval/matrix.csv`` as written: empty cells (a CNN-alone row has no space, k or fallback) are NaN."""
    return pd.read_csv(path, keep_default_na=True)
