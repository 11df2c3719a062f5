"""Classification metrics for ordinal LUS scores, and patient-level bootstrap.

Every metric is defined on a confusion matrix (rows = true class, columns = predicted class),
and the confusion-matrix version works on a whole stack of matrices at once (shape
``(..., C, C)``).  That is what makes the patient bootstrap cheap: the frames of one patient
always travel together, so a bootstrap resample is a vector of patient counts ``w`` and its
confusion matrix is ``sum_p w[p] * CM[p]``.  One matrix product turns ``n_boot`` resamples of
``n_patients`` per-patient confusion matrices into ``n_boot`` resampled confusion matrices, and
the metric is evaluated on all of them in one vectorised call.

Labels are class *indices* ``0..C-1`` (see docs/architecture.md).  The frame-level metric
functions (``accuracy(y_true, y_pred)`` ...) carry their confusion-matrix version as the
attribute ``.cm`` so that :func:`bootstrap_ci` and :func:`paired_bootstrap_diff` take the fast
path for them; any other ``f(y_true, y_pred) -> float`` works too, through a slower loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "confusion_matrix",
    "per_patient_confusion",
    "cm_accuracy",
    "cm_balanced_accuracy",
    "cm_macro_f1",
    "cm_qwk",
    "cm_per_class_recall",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "quadratic_weighted_kappa",
    "per_class_recall",
    "CM_METRICS",
    "patient_resample_counts",
    "bootstrap_samples",
    "BootstrapCI",
    "PairedDiff",
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "ci_from_samples",
    "paired_from_samples",
    "round_half_up",
    "aggregate_by_group",
    "VIDEO_AGGREGATIONS",
    "video_level",
]


# --------------------------------------------------------------------------- confusion matrices


def _n_classes(n_classes: int | None, *arrays: np.ndarray) -> int:
    if n_classes is not None:
        return int(n_classes)
    m = max((int(a.max()) for a in arrays if a.size), default=0)
    return m + 1


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """(C, C) int64 counts, rows = true class index, columns = predicted class index."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    c = _n_classes(n_classes, y_true, y_pred)
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= c):
        raise ValueError(f"labels must be class indices in 0..{c - 1}")
    return np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)


def per_patient_confusion(y_true, y_pred, group_codes, n_groups: int, n_classes: int) -> np.ndarray:
    """(n_groups, C, C) confusion matrices, one per group code 0..n_groups-1 (e.g. patients)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    g = np.asarray(group_codes, dtype=np.int64).ravel()
    c = int(n_classes)
    flat = (g * c + y_true) * c + y_pred
    return np.bincount(flat, minlength=n_groups * c * c).reshape(n_groups, c, c)


# --------------------------------------------------------------------------- metrics on (..., C, C)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def cm_accuracy(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    return _safe_div(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def cm_per_class_recall(cm: np.ndarray) -> np.ndarray:
    """(..., C) recall per true class; NaN for a class absent from y_true."""
    cm = np.asarray(cm, dtype=np.float64)
    return _safe_div(np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(axis=-1))


def cm_balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in y_true (as sklearn's balanced_accuracy_score)."""
    rec = cm_per_class_recall(cm)
    present = ~np.isnan(rec)
    n = present.sum(axis=-1)
    return _safe_div(np.where(present, rec, 0.0).sum(axis=-1), n)


def cm_macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes that occur in y_true or y_pred (as sklearn's f1_score(average='macro')).

    F1 of a class = 2 TP / (2 TP + FP + FN) = 2 TP / (row sum + column sum).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    den = cm.sum(axis=-1) + cm.sum(axis=-2)
    f1 = _safe_div(2.0 * tp, den)
    present = den > 0
    return _safe_div(np.where(present, f1, 0.0).sum(axis=-1), present.sum(axis=-1))


def cm_qwk(cm: np.ndarray) -> np.ndarray:
    """Quadratic-weighted Cohen's kappa with ordinal weights (i - j)^2 over the full class list.

    kappa = 1 - sum(W * O) / sum(W * E),  E = outer(row sums, column sums) / n.
    NaN when the expected weighted disagreement is 0 (e.g. a single class in both vectors).
    Equals sklearn's ``cohen_kappa_score(a, b, weights='quadratic', labels=range(C))``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[-1]
    idx = np.arange(c)
    w = (idx[:, None] - idx[None, :]) ** 2.0
    n = cm.sum(axis=(-2, -1))
    rows = cm.sum(axis=-1)
    cols = cm.sum(axis=-2)
    observed = (cm * w).sum(axis=(-2, -1))
    # sum_ij w_ij r_i c_j / n  without materialising the outer product
    expected = _safe_div(np.einsum("...i,ij,...j->...", rows, w, cols), n)
    return 1.0 - _safe_div(observed, expected)


CM_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": cm_accuracy,
    "balanced_accuracy": cm_balanced_accuracy,
    "macro_f1": cm_macro_f1,
    "qwk": cm_qwk,
}


# --------------------------------------------------------------------------- frame-level metric functions


def _frame_metric(cm_fn: Callable[[np.ndarray], np.ndarray], name: str, doc: str):
    def fn(y_true, y_pred, n_classes: int | None = None) -> float:
        y_true = np.asarray(y_true)
        y_pred = np.asarray(y_pred)
        c = _n_classes(n_classes, y_true, y_pred)
        return float(cm_fn(confusion_matrix(y_true, y_pred, c)))

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = doc
    fn.cm = cm_fn  # fast path for the bootstrap
    return fn


accuracy = _frame_metric(cm_accuracy, "accuracy", "Fraction of frames scored correctly.")
balanced_accuracy = _frame_metric(
    cm_balanced_accuracy, "balanced_accuracy", "Mean per-class recall over the classes present in y_true."
)
macro_f1 = _frame_metric(cm_macro_f1, "macro_f1", "Unweighted mean F1 over classes seen in y_true or y_pred.")
quadratic_weighted_kappa = _frame_metric(
    cm_qwk, "quadratic_weighted_kappa", "Cohen's kappa with quadratic (ordinal) weights over all classes."
)


def per_class_recall(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return cm_per_class_recall(confusion_matrix(y_true, y_pred, _n_classes(n_classes, y_true, y_pred)))


def patient_resample_counts(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_patients) int: how often each patient is drawn in each resample.

    Drawing ``n_patients`` patients with replacement = one multinomial draw with equal
    probabilities.  Use the same matrix for every prediction vector you want to compare
    (that is what makes a bootstrap *paired*).
    """
    if n_patients <= 0:
        raise ValueError("need at least one patient to bootstrap")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=int(n_boot))


def _patient_codes(patients) -> tuple[np.ndarray, np.ndarray]:
    uniq, codes = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    return uniq, codes.ravel()


def bootstrap_samples(
    cm_fn: Callable[[np.ndarray], np.ndarray],
    patient_cms: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Metric on every resample: counts (B, P) x per-patient confusion matrices (P, C, C) -> (B,)."""
    p, c, _ = patient_cms.shape
    boot_cms = (counts @ patient_cms.reshape(p, c * c)).reshape(-1, c, c)
    return cm_fn(boot_cms)


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float  # metric on the full data
    lo: float
    hi: float
    mean: float  # mean over resamples
    std: float
    n_boot: int
    ci: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # metric(pred_a) - metric(pred_b) on the full data
    mean_diff: float  # mean over resamples
    lo: float
    hi: float
    p_value: float  # two-sided bootstrap p-value for "no difference"
    significant: bool  # the CI excludes 0
    n_boot: int
    ci: float

    def as_dict(self) -> dict:
        return asdict(self)


def _quantiles(samples: np.ndarray, ci: float) -> tuple[float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def ci_from_samples(estimate: float, samples: np.ndarray, ci: float) -> BootstrapCI:
    lo, hi = _quantiles(samples, ci)
    s = np.asarray(samples, dtype=np.float64)
    finite = s[~np.isnan(s)]
    return BootstrapCI(
        estimate=float(estimate),
        lo=lo,
        hi=hi,
        mean=float(finite.mean()) if finite.size else float("nan"),
        std=float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        n_boot=int(s.size),
        ci=float(ci),
    )


def paired_from_samples(diff: float, diff_samples: np.ndarray, ci: float) -> PairedDiff:
    """Summarise resampled differences (a - b computed on the *same* resamples)."""
    d = np.asarray(diff_samples, dtype=np.float64)
    d = d[~np.isnan(d)]
    lo, hi = _quantiles(d, ci)
    if d.size:
        # two-sided: twice the smaller tail mass on either side of 0 (ties count on both sides)
        p = float(min(1.0, 2.0 * min(np.mean(d <= 0.0), np.mean(d >= 0.0))))
    else:
        p = float("nan")
    significant = bool(d.size and (lo > 0.0 or hi < 0.0))
    return PairedDiff(
        diff=float(diff),
        mean_diff=float(d.mean()) if d.size else float("nan"),
        lo=lo,
        hi=hi,
        p_value=p,
        significant=significant,
        n_boot=int(np.asarray(diff_samples).size),
        ci=float(ci),
    )


def _resolve_metric(metric_fn) -> tuple[Callable | None, Callable | None]:
    """(cm-function or None, frame-function or None)."""
    if isinstance(metric_fn, str):
        if metric_fn not in CM_METRICS:
            raise KeyError(f"unknown metric {metric_fn!r}; known: {sorted(CM_METRICS)}")
        return CM_METRICS[metric_fn], None
    cm_fn = getattr(metric_fn, "cm", None)
    if cm_fn is not None:
        return cm_fn, None
    return None, metric_fn


def _loop_samples(frame_fn, y_true, preds: Sequence[np.ndarray], codes, counts) -> list[np.ndarray]:
    """Slow path for arbitrary f(y_true, y_pred): expand each resample into frame indices."""
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(counts.shape[1]))
    ends = np.searchsorted(codes[order], np.arange(counts.shape[1]), side="right")
    members = [order[s:e] for s, e in zip(starts, ends, strict=True)]
    out = [np.empty(counts.shape[0]) for _ in preds]
    for b, row in enumerate(counts):
        idx = np.concatenate([np.tile(members[p], k) for p, k in enumerate(row) if k] or [np.empty(0, int)])
        for j, pred in enumerate(preds):
            out[j][b] = frame_fn(y_true[idx], pred[idx])
    return out


def bootstrap_ci(
    metric_fn,
    y_true,
    y_pred,
    patients,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    n_classes: int | None = None,
) -> BootstrapCI:
    """Percentile bootstrap CI of a metric, resampling *patients* with replacement.

    ``metric_fn``: a name in :data:`CM_METRICS`, a metric function of this module (fast,
    vectorised) or any ``f(y_true, y_pred) -> float`` (loop over resamples).
    Same ``seed`` and same set of patients -> identical result.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    _, codes = _patient_codes(patients)
    n_pat = int(codes.max()) + 1 if codes.size else 0
    counts = patient_resample_counts(n_pat, n_boot, seed)
    cm_fn, frame_fn = _resolve_metric(metric_fn)
    if cm_fn is not None:
        c = _n_classes(n_classes, y_true, y_pred)
        pcm = per_patient_confusion(y_true, y_pred, codes, n_pat, c)
        estimate = float(cm_fn(pcm.sum(axis=0)))
        samples = bootstrap_samples(cm_fn, pcm, counts)
    else:
        estimate = float(frame_fn(y_true, y_pred))
        (samples,) = _loop_samples(frame_fn, y_true, [y_pred], codes, counts)
    return ci_from_samples(estimate, samples, ci)


def paired_bootstrap_diff(
    metric_fn,
    y_true,
    pred_a,
    pred_b,
    patients,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    n_classes: int | None = None,
) -> PairedDiff:
    """Paired patient bootstrap of ``metric(pred_a) - metric(pred_b)``.

    Both prediction vectors are scored on the *same* patient resamples, so patient-to-patient
    variation that affects both cancels.  ``significant`` is True when the CI excludes 0;
    ``p_value`` is the two-sided bootstrap p-value (resolution 1 / n_boot).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    pred_a = np.asarray(pred_a, dtype=np.int64)
    pred_b = np.asarray(pred_b, dtype=np.int64)
    _, codes = _patient_codes(patients)
    n_pat = int(codes.max()) + 1 if codes.size else 0
    counts = patient_resample_counts(n_pat, n_boot, seed)
    cm_fn, frame_fn = _resolve_metric(metric_fn)
    if cm_fn is not None:
        c = _n_classes(n_classes, y_true, pred_a, pred_b)
        pa = per_patient_confusion(y_true, pred_a, codes, n_pat, c)
        pb = per_patient_confusion(y_true, pred_b, codes, n_pat, c)
        diff = float(cm_fn(pa.sum(axis=0)) - cm_fn(pb.sum(axis=0)))
        d = bootstrap_samples(cm_fn, pa, counts) - bootstrap_samples(cm_fn, pb, counts)
    else:
        diff = float(frame_fn(y_true, pred_a) - frame_fn(y_true, pred_b))
        sa, sb = _loop_samples(frame_fn, y_true, [pred_a, pred_b], codes, counts)
        d = sa - sb
    return paired_from_samples(diff, d, ci)


# --------------------------------------------------------------------------- video-level scores


def round_half_up(x) -> np.ndarray:
    """Round to the nearest integer, .5 upwards (np.round would send 2.5 to 2)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def aggregate_by_group(values, group_codes, n_groups: int, how: str, n_classes: int) -> np.ndarray:
    """Aggregate class indices per group: ``max``, ``mean`` (rounded half up) or ``majority``
    (most frequent class, ties -> lower class).  Returns (n_groups,) int64."""
    v = np.asarray(values, dtype=np.int64).ravel()
    g = np.asarray(group_codes, dtype=np.int64).ravel()
    if how == "max":
        out = np.full(n_groups, -1, dtype=np.int64)
        np.maximum.at(out, g, v)
        return out
    if how == "mean":
        sums = np.bincount(g, weights=v, minlength=n_groups)
        n = np.bincount(g, minlength=n_groups)
        return round_half_up(_safe_div(sums, n))
    if how == "majority":
        hist = np.bincount(g * n_classes + v, minlength=n_groups * n_classes).reshape(n_groups, n_classes)
        return hist.argmax(axis=1)  # argmax returns the first (lowest) class on ties
    raise ValueError(f"unknown aggregation {how!r}; use max, mean or majority")


VIDEO_AGGREGATIONS = ("max", "mean", "majority")


def video_level(y_true, y_pred, videos, patients, how: str, n_classes: int):
    """Video-level truth and prediction: both aggregated the same way over a video's frames.

    Returns ``(video_ids, true, pred, patient_of_video)``.
    """
    vids, first, vcodes = np.unique(np.asarray(videos).astype(str), return_index=True, return_inverse=True)
    vcodes = vcodes.ravel()
    pats = np.asarray(patients).astype(str)
    t = aggregate_by_group(y_true, vcodes, len(vids), how, n_classes)
    p = aggregate_by_group(y_pred, vcodes, len(vids), how, n_classes)
    return vids, t, p, pats[first]


# Failure-detection metrics (AUROC, AURC, E-AURC, AUGRC, risk-coverage curves) live in
# lus_core.confidence.failure_metrics, their one implementation.
