"""The all-configurations evaluation matrix (step `evaluate`).

Every configuration backbone x confidence method x similarity space x k x fallback mode is
scored on the TEST patients, next to the framing rows that say what the numbers mean:

=================  =======================================================================
row_type           final score of a test frame
=================  =======================================================================
cnn                the CNN's score (the classifier alone)
fallback_only      the similarity fallback's score for every frame
combined           the CNN's score where the confidence model trusts it, else the fallback's
oracle_detector    trust exactly the frames the CNN gets right, else our fallback
oracle_fallback    our confidence model, and an untrusted frame gets its true label
=================  =======================================================================

Uncertainty is a percentile bootstrap over test *patients* (frames of a patient are not
independent).  One patient-resample matrix is drawn once and shared by every row, so the
difference between any configuration and the CNN alone of the same backbone is a *paired*
bootstrap.  All rows are computed from per-patient confusion matrices, which makes 1000
resamples of ~500 rows a matter of seconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lus_core import metrics as M
from lus_core.config import config_get as _cfg
from lus_core.io_utils import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

__all__ = [
    "run_evaluate",
    "evaluate_matrix",
    "load_predictions",
    "load_confidence",
    "load_neighbors",
    "get_fallback_fn",
    "ROW_TYPES",
    "MAIN_METRICS",
]

ROW_TYPES = ("cnn", "fallback_only", "combined", "oracle_detector", "oracle_fallback")
MAIN_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk")
DELTA_METRICS = ("accuracy", "macro_f1")
CONFIG_COLUMNS = ("row_type", "backbone", "confidence", "space", "k", "fallback", "diversity")


# --------------------------------------------------------------------------- fallback scoring


def _fallback_scores_local(neighbor_labels, distances, n_classes: int, mode: str, eps: float = 1e-6) -> np.ndarray:
    """Stand-in for ``lus_core.similarity.fallback.fallback_scores`` (same signature and rules).

    mean: mean of the neighbours' class indices, rounded half up (the study);
    vote: majority class, ties -> lower class; weighted: vote weighted by 1 / (distance + eps).
    Padded neighbours (label -1 or non-finite distance) are ignored; a row without any valid
    neighbour gets -1.
    """
    lab = np.asarray(neighbor_labels, dtype=np.int64)
    if lab.ndim != 2:
        raise ValueError("neighbor_labels must be (N, k)")
    dist = np.asarray(distances, dtype=np.float64).reshape(lab.shape)
    valid = (lab >= 0) & np.isfinite(dist)
    n_valid = valid.sum(axis=1)
    if mode == "mean":
        score = M.round_half_up(np.where(valid, lab, 0).sum(axis=1) / np.maximum(n_valid, 1))
    elif mode in ("vote", "weighted"):
        w = np.ones(lab.shape) if mode == "vote" else 1.0 / (np.where(valid, dist, 0.0) + eps)
        votes = np.zeros((lab.shape[0], n_classes), dtype=np.float64)
        rows = np.broadcast_to(np.arange(lab.shape[0])[:, None], lab.shape)
        np.add.at(votes, (rows[valid], lab[valid]), w[valid])
        if mode == "weighted":  # equal weights up to float noise are a tie
            votes = np.round(votes / np.maximum(votes.max(axis=1, keepdims=True), 1e-300), 12)
        score = votes.argmax(axis=1)  # first maximum = lower class on ties
    else:
        raise ValueError(f"unknown fallback mode {mode!r}; use mean, vote or weighted")
    return np.where(n_valid > 0, score, -1).astype(np.int64)


def get_fallback_fn() -> Callable:
    """``lus_core.similarity.fallback.fallback_scores`` when that module exists, else the local stand-in."""
    try:
        from lus_core.similarity.fallback import fallback_scores
    except ModuleNotFoundError as e:
        if e.name not in ("lus_core.similarity", "lus_core.similarity.fallback"):
            raise
        return _fallback_scores_local
    except ImportError as e:  # module exists but has no fallback_scores (yet)
        if "fallback_scores" not in str(e):
            raise
        return _fallback_scores_local
    return fallback_scores


# --------------------------------------------------------------------------- loading


def _str_array(ds) -> np.ndarray:
    try:
        return np.asarray(ds.asstr()[()], dtype=str)
    except (TypeError, AttributeError):
        raw = ds[()]
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(raw)])


@dataclass
class Predictions:
    backbone: str
    frame_id: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    video: np.ndarray
    split: np.ndarray
    softmax: np.ndarray
    path: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def pred(self) -> np.ndarray:
        return self.softmax.argmax(axis=1).astype(np.int64)


def load_predictions(path: str | os.PathLike, backbone: str = "") -> Predictions:
    with h5py.File(path, "r") as f:
        probs = f["softmax"][()] if "softmax" in f else f["logits"][()]
        p = Predictions(
            backbone=backbone or str(f.attrs.get("backbone", Path(path).stem)),
            frame_id=f["frame_id"][()].astype(np.int64),
            label=f["label"][()].astype(np.int64),
            patient=_str_array(f["patient"]),
            video=_str_array(f["video"]),
            split=_str_array(f["split"]),
            softmax=np.asarray(probs, dtype=np.float64),
            path=str(path),
            attrs={k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
        )
    return p


def load_embedding(path: str | os.PathLike, frame_ids: np.ndarray) -> np.ndarray:
    """Embedding rows of a predictions file for ``frame_ids`` (in that order)."""
    with h5py.File(path, "r") as f:
        rows = _align(f["frame_id"][()], frame_ids, f"predictions {path}")
        return np.asarray(f["embedding"][()], dtype=np.float32)[rows]


def _align(source_ids, wanted, what: str) -> np.ndarray:
    """Row index in ``source_ids`` of every id in ``wanted`` (error when one is missing)."""
    source_ids = np.asarray(source_ids, dtype=np.int64).ravel()
    wanted = np.asarray(wanted, dtype=np.int64).ravel()
    if source_ids.size == 0:
        if wanted.size:
            raise ValueError(f"{what}: no rows, {wanted.size} frame(s) wanted")
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(source_ids, kind="stable")
    pos = np.clip(np.searchsorted(source_ids[order], wanted), 0, source_ids.size - 1)
    rows = order[pos]
    missing = source_ids[rows] != wanted
    if np.any(missing):
        ids = wanted[missing][:5].tolist()
        raise ValueError(f"{what}: {int(missing.sum())} frame(s) missing, e.g. frame_id {ids}")
    return rows


def _to_bool(s: pd.Series) -> np.ndarray:
    if s.dtype == bool:
        return s.to_numpy()
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes", "t", "1.0"]).to_numpy()


def load_confidence(csv_path, frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(confidence, trusted, set_size or None) aligned to ``frame_ids``."""
    df = pd.read_csv(csv_path)
    rows = _align(df["frame_id"].to_numpy(np.int64), frame_ids, f"confidence {csv_path}")
    conf = df["confidence"].to_numpy(np.float64)[rows]
    trusted = _to_bool(df["trusted"])[rows]
    set_size = None
    if "set_size" in df.columns and df["set_size"].notna().any():
        set_size = df["set_size"].to_numpy(np.float64)[rows]
    return conf, trusted, set_size


def load_neighbors(path, frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(neighbor_frame_id, neighbor_label, distance), each (n, k_max), aligned to ``frame_ids``
    and sorted by distance (nearest first)."""
    with h5py.File(path, "r") as f:
        fid = f["frame_id"][()].astype(np.int64)
        rows = _align(fid, frame_ids, f"neighbors {path}")
        nid = f["neighbor_frame_id"][()].astype(np.int64)[rows]
        lab = f["neighbor_label"][()].astype(np.int64)[rows]
        dist = f["distance"][()].astype(np.float64)[rows]
    order = np.argsort(dist, axis=1, kind="stable")
    take = np.take_along_axis
    return take(nid, order, 1), take(lab, order, 1), take(dist, order, 1)


# --------------------------------------------------------------------------- the matrix


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
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
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
        return f"{config_id({**row, 'diversity': ''})} · one per {div}"  # the fallback's diverse list
    if rt == "cnn":
        return f"{b} · CNN alone"
    if rt == "fallback_only":
        return f"{b} · fallback only · {row['space']} · {k_s} · {row['fallback']}"
    if rt == "oracle_detector":
        return f"{b} · ORACLE detector · {row['space']} · {k_s} · {row['fallback']}"
    if rt == "oracle_fallback":
        return f"{b} · {row['confidence']} · ORACLE fallback"
    return f"{b} · {row['confidence']} · {row['space']} · {k_s} · {row['fallback']}"


def _safe_name(x) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(x))


def evaluate_matrix(
    preds: Mapping[str, Predictions],
    conf: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    neigh: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    ts: TestSet,
    ks: list[int],
    modes: list[str],
    class_names: list[str],
    fallback_fn: Callable | None = None,
) -> pd.DataFrame:
    """The matrix from arrays already aligned to ``ts.frame_id``.

    ``preds[backbone].pred`` must already be restricted to the test frames (same order);
    ``conf[(backbone, method)] = (confidence, trusted)``; ``neigh[(backbone, space)] =
    (neighbor_label, distance)`` sorted nearest first.
    """
    fallback_fn = fallback_fn or get_fallback_fn()
    c = ts.n_classes
    rows: list[dict] = []
    backbones = list(preds)
    for b in backbones:
        cnn = preds[b].pred
        all_true = np.ones(len(cnn), dtype=bool)
        all_false = ~all_true
        cnn_ok = cnn == ts.y

        def add(row_type, pred, trusted, cnn_samples, *, b=b, cnn=cnn, **cfg):
            r, s = _score_row(ts, pred, cnn, trusted, cnn_samples, class_names)
            meta = {"row_type": row_type, "backbone": b, "confidence": "", "space": "", "k": pd.NA, "fallback": "",
                    "diversity": ""}
            meta.update(cfg)
            rows.append({**meta, **r})
            return s

        cnn_s = add("cnn", cnn, all_true, None, confidence="always", fallback="none")
        methods = [m for (bb, m) in conf if bb == b]
        # key (backbone, space) = the plain list; (backbone, space, diversity) = a diverse list
        for key in [key for key in neigh if key[0] == b]:
            space, diversity = key[1], (key[2] if len(key) > 2 else "none")
            nlab, ndist = neigh[key]
            kmax = nlab.shape[1]
            for k in ks:
                if k > kmax:
                    raise ValueError(f"neighbors {b}/{space} hold {kmax} neighbours per frame, config asks k={k}")
                for mode in modes:
                    fb = np.asarray(fallback_fn(nlab[:, :k], ndist[:, :k], c, mode), dtype=np.int64)
                    fb = np.where(fb < 0, cnn, fb)  # no valid neighbour: nothing to fall back on
                    sim = {"space": space, "k": int(k), "fallback": mode, "diversity": diversity}
                    add("fallback_only", fb, all_false, cnn_s, confidence="never", **sim)
                    add("oracle_detector", np.where(cnn_ok, cnn, fb), cnn_ok, cnn_s, confidence="oracle", **sim)
                    for m in methods:
                        trusted = conf[(b, m)][1]
                        add("combined", np.where(trusted, cnn, fb), trusted, cnn_s, confidence=m, **sim)
        for m in methods:
            trusted = conf[(b, m)][1]
            add("oracle_fallback", np.where(trusted, cnn, ts.y), trusted, cnn_s, confidence=m, fallback="oracle")

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
    # config columns first, then metrics
    first = ["rank", "config_id", *CONFIG_COLUMNS]
    return df[first + [col for col in df.columns if col not in first]]


# --------------------------------------------------------------------------- confidence-method table


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and selective risk (error rate among the kept frames), most confident first."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    err = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    n = np.arange(1, len(err) + 1)
    return n / max(len(err), 1), np.cumsum(err) / n


def confidence_table(ts: TestSet, preds, conf_full, conf_json: Mapping) -> list[dict]:
    out = []
    for (b, m), (confidence, trusted, set_size) in conf_full.items():
        correct = preds[b].pred == ts.y
        cov, risk = risk_coverage(confidence, correct)
        auroc = M.auroc(confidence, correct)
        info = conf_json.get((b, m), {}) or {}
        reported = info.get("test_metrics", {}) or {}
        out.append({
            "backbone": b,
            "method": m,
            "threshold": _scalar(info.get("threshold")),
            "coverage": float(trusted.mean()) if len(trusted) else float("nan"),
            "acc_trusted": float(correct[trusted].mean()) if trusted.any() else float("nan"),
            "acc_rejected": float(correct[~trusted].mean()) if (~trusted).any() else float("nan"),
            "auroc": auroc,
            "aurc": float(risk.mean()) if len(risk) else float("nan"),
            "mean_set_size": float(np.nanmean(set_size)) if set_size is not None else None,
            "reported": {k: _scalar(v) for k, v in reported.items() if _scalar(v) is not None},
        })
    return out


def _scalar(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    return None


# --------------------------------------------------------------------------- summary


def _fmt_ci(est, lo, hi, pct=True) -> str:
    if pct:
        return f"{100 * est:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def _row_summary(r: Mapping) -> dict:
    keys = ["rank", "config_id", *CONFIG_COLUMNS]
    for name in MAIN_METRICS:
        keys += [name, f"{name}_lo", f"{name}_hi"]
    for name in DELTA_METRICS:
        keys += [f"delta_{name}", f"delta_{name}_lo", f"delta_{name}_hi", f"delta_{name}_p",
                 f"delta_{name}_significant"]
    keys += ["fallback_rate", "frames_fixed", "frames_broken", "cnn_acc_rejected", "fallback_acc_rejected",
             "confusion_matrix"]
    out = {}
    for k in keys:
        v = r.get(k)
        if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            v = None
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = float(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        if k == "confusion_matrix" and isinstance(v, str):
            v = json.loads(v)
        out[k] = v
    return out


def fmt_p(p, n_boot: int, factor: float = 1.0) -> str:
    """``p = 0.034``, or ``p < 0.001`` when no resample crossed 0 (the bootstrap's resolution)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p = n/a"
    if p <= 0:
        return f"p < {min(1.0, factor / max(n_boot, 1)):.2g}"
    return f"p = {min(1.0, p * factor):.3f}"


def significance_statement(best: Mapping | None, n_configs: int, n_boot: int, ci: float) -> str:
    if best is None:
        return "No combined configuration was evaluated."
    sig = bool(best["delta_accuracy_significant"])
    verdict = (
        "The interval excludes 0: the difference is significant at this level."
        if sig else
        "The interval includes 0: this test set cannot tell the combination from the CNN alone."
    )
    return (
        f"Best combined configuration: {best['config_id']}, accuracy {100 * best['accuracy']:.1f}% "
        f"[{100 * best['accuracy_lo']:.1f}, {100 * best['accuracy_hi']:.1f}]. "
        f"Against the CNN alone of the same backbone (paired patient bootstrap, {n_boot} resamples, "
        f"{int(round(100 * ci))}% CI): accuracy "
        f"{_fmt_ci(best['delta_accuracy'], best['delta_accuracy_lo'], best['delta_accuracy_hi'])}, "
        f"{fmt_p(best['delta_accuracy_p'], n_boot)}. {verdict} "
        f"It was picked as the best of {n_configs} configurations on the same test patients, so its gain is "
        f"optimistic (winner's curse); Bonferroni-adjusted over the {n_configs}: "
        f"{fmt_p(best['delta_accuracy_p'], n_boot, n_configs)}."
    )


def _dataset_counts(frame_index_csv, split: Mapping, n_classes: int) -> dict:
    out: dict = {}
    try:
        fi = pd.read_csv(frame_index_csv)
    except (OSError, ValueError) as e:  # the report still works without it
        log.warning("frame index %s unreadable: %s", frame_index_csv, e)
        return out
    test = set(map(str, split.get("test_patients", [])))
    fi["patient"] = fi["patient"].astype(str)
    is_test = fi["patient"].isin(test)
    out["n_frames"] = int(len(fi))
    out["n_videos"] = int(fi["video"].nunique())
    out["n_patients"] = int(fi["patient"].nunique())
    for part, mask in (("all", np.ones(len(fi), bool)), ("train", ~is_test), ("test", is_test)):
        sub = fi[mask]
        out[f"{part}_frames_per_class"] = np.bincount(sub["label"].astype(int), minlength=n_classes).tolist()
        out[f"{part}_videos"] = int(sub["video"].nunique())
        out[f"{part}_patients"] = int(sub["patient"].nunique())
    return out


# --------------------------------------------------------------------------- entry point




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
    gallery_renderer: Callable | None = None,
) -> pd.DataFrame:
    """Score every configuration on the test patients; write matrix.csv, summary.json and figures.

    predictions: backbone -> predictions/{backbone}.h5
    confidence: (backbone, method) -> (confidence/{b}/{m}.csv, confidence/{b}/{m}.json)
    neighbors: (backbone, space) -> neighbors/{b}/{space}.h5
    figures: False skips the png files (tests, quick runs).
    gallery_renderer: a ``render_gallery(query_img, neighbor_imgs, labels, patients, distances,
    out_png)``; default: ``lus_core.similarity.gallery.render_gallery`` when present, else a
    built-in one.
    Returns the matrix (sorted best first).
    """
    classes = list(_cfg(config, "classes", default=[0, 1, 2, 3]))
    class_names = [_safe_name(c) for c in classes]
    n_classes = len(classes)
    seed = int(_cfg(config, "seed", default=0))
    n_boot = int(_cfg(config, "evaluate", "n_bootstrap", default=1000))
    ci = float(_cfg(config, "evaluate", "ci", default=0.95))
    ks = [int(k) for k in _cfg(config, "similarity", "k", default=[5])]
    modes = list(_cfg(config, "similarity", "fallback", default=["mean"]))
    split = read_json(split_json)
    test_patients = sorted(map(str, split["test_patients"]))

    if not predictions:
        raise ValueError("no predictions given")
    preds_full = {b: load_predictions(p, b) for b, p in sorted(predictions.items())}
    ref = None
    preds_test: dict[str, Predictions] = {}
    for b, p in preds_full.items():
        is_test = p.split == "test"
        got = sorted(set(p.patient[is_test]))
        if got != test_patients:
            raise ValueError(
                f"predictions {p.path}: test patients {got} differ from split.json {test_patients}")
        leak = set(p.patient[~is_test]) & set(test_patients)
        if leak:
            raise ValueError(f"predictions {p.path}: test patient(s) {sorted(leak)} have frames marked 'train'")
        order = np.argsort(p.frame_id[is_test], kind="stable")
        idx = np.flatnonzero(is_test)[order]
        sub = Predictions(b, p.frame_id[idx], p.label[idx], p.patient[idx], p.video[idx], p.split[idx],
                          p.softmax[idx], p.path, p.attrs)
        if ref is None:
            ref = sub
        elif not (np.array_equal(ref.frame_id, sub.frame_id) and np.array_equal(ref.label, sub.label)):
            raise ValueError(f"backbones {ref.backbone} and {b} disagree on the test frames or their labels")
        preds_test[b] = sub
    assert ref is not None
    if ref.label.size and (ref.label.min() < 0 or ref.label.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}: are they class indices?")

    counts = M.patient_resample_counts(len(test_patients), n_boot, seed)
    ts = TestSet(ref.frame_id, ref.label, ref.patient, ref.video, n_classes, counts, ci)

    conf_full, conf_json, conf_pairs = {}, {}, {}
    for (b, m), (csv_path, json_path) in sorted(confidence.items()):
        if b not in preds_test:
            continue
        cval, trusted, set_size = load_confidence(csv_path, ts.frame_id)
        conf_full[(b, m)] = (cval, trusted, set_size)
        conf_pairs[(b, m)] = (cval, trusted)
        try:
            conf_json[(b, m)] = read_json(json_path) if json_path else {}
        except (OSError, ValueError) as e:
            log.warning("confidence json %s unreadable: %s", json_path, e)
            conf_json[(b, m)] = {}
    from lus_core.similarity.neighbors import read_neighbors, stored_diversities

    diversities = list(_cfg(config, "similarity", "fallback_diversity", default=["none"]))
    gallery_diversity = str(_cfg(config, "similarity", "diversity", default="video"))
    neigh_full, neigh_pairs, neigh_gallery = {}, {}, {}
    for (b, s), path in sorted(neighbors.items()):
        if b not in preds_test:
            continue
        nid, nlab, ndist = load_neighbors(path, ts.frame_id)
        neigh_full[(b, s)] = (nid, nlab, ndist)
        if "none" in diversities:
            neigh_pairs[(b, s)] = (nlab, ndist)
        for d in [d for d in diversities if d != "none"]:
            lists = read_neighbors(path, ts.frame_id, diversity=d)
            neigh_pairs[(b, s, d)] = (lists.neighbor_label, lists.distance)
            neigh_full[(b, s, d)] = (lists.neighbor_frame_id, lists.neighbor_label, lists.distance)
        if gallery_diversity in stored_diversities(path)[1:]:  # the report's galleries: one neighbour per video
            g = read_neighbors(path, ts.frame_id, diversity=gallery_diversity)
            neigh_gallery[(b, s)] = (g.neighbor_frame_id, g.neighbor_label, g.distance)

    matrix = evaluate_matrix(preds_test, conf_pairs, neigh_pairs, ts, ks, modes, class_names)

    with atomic_path(out_matrix_csv) as tmp:
        matrix.to_csv(tmp, index=False)

    records = matrix.to_dict("records")
    combined = [r for r in records if r["row_type"] == "combined"]
    deployable = [r for r in records if r["row_type"] in ("cnn", "combined", "fallback_only")]
    best = combined[0] if combined else None
    n_combined = len(combined)
    summary: dict = {
        "best": _row_summary(best) if best else None,
        "best_deployable": _row_summary(deployable[0]) if deployable else None,
        "cnn_alone": {r["backbone"]: _row_summary(r) for r in records if r["row_type"] == "cnn"},
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
            "test_class_counts": np.bincount(ts.y, minlength=n_classes).tolist(),
            "rows": int(len(matrix)),
            "rows_per_type": {t: int((matrix["row_type"] == t).sum()) for t in ROW_TYPES},
            "backbones": list(preds_test),
            "confidence_methods": sorted({m for (_, m) in conf_pairs}),
            "spaces": sorted({key[1] for key in neigh_pairs}),
            "fallback_diversity": diversities,
            "k": ks,
            "fallback_modes": modes,
            "dataset": _dataset_counts(frame_index_csv, split, n_classes),
        },
        "test_patients": test_patients,
        "classes": classes,
        "n_bootstrap": n_boot,
        "ci": ci,
        "seed": seed,
        "confidence_methods": confidence_table(ts, preds_test, conf_full, conf_json),
        "fallback_function": f"{get_fallback_fn().__module__}.{get_fallback_fn().__name__}",
        "matrix_csv": os.path.relpath(out_matrix_csv, Path(out_summary_json).parent),
        "figures": [],
        "galleries": [],
        "config": dict(config),
    }
    for t in ROW_TYPES:
        sub = [r for r in records if r["row_type"] == t]
        if sub:
            summary["best_per_row_type"][t] = _row_summary(sub[0])
    if best:
        summary["significance"]["best_gain_accuracy"] = {
            k: _row_summary(best)[k] for k in
            ("delta_accuracy", "delta_accuracy_lo", "delta_accuracy_hi", "delta_accuracy_p",
             "delta_accuracy_significant")
        }
        summary["significance"]["best_p_value_bonferroni"] = min(1.0, float(best["delta_accuracy_p"]) * n_combined)

    if figures:
        from lus_core import figures as F  # matplotlib only when drawing

        figs, gals = F.evaluation_figures(
            matrix=matrix, ts=ts, preds_test=preds_test, preds_full=preds_full, conf_full=conf_full,
            neigh_full=neigh_full, neigh_gallery=neigh_gallery, frame_index_csv=frame_index_csv, out_dir=out_dir_figures,
            class_names=[str(c) for c in classes], config=config, gallery_renderer=gallery_renderer,
        )
        base = Path(out_summary_json).parent
        summary["figures"] = [{**f, "file": os.path.relpath(f["file"], base)} for f in figs]
        summary["galleries"] = [{**g, "file": os.path.relpath(g["file"], base)} for g in gals]

    write_json(out_summary_json, _clean_json(summary))
    return matrix


def _clean_json(o):
    """NaN -> None (strict JSON), numpy -> python."""
    if isinstance(o, dict):
        return {str(k): _clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean_json(v) for v in o]
    if o is pd.NA:
        return None
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return None if math.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return _clean_json(o.tolist())
    return o
