"""Uncertainty metrics, pure numpy: the one implementation of each failure-detection metric
(failure AUROC, risk-coverage curve, AURC, E-AURC, generalized risk-coverage curve, AUGRC),
used by the confidence step, the evaluation, the figures and the report.

Conventions: `conf` (N,) higher = prediction more likely correct; `correct` (N,) bool; `trusted`
(N,) bool. Ties in `conf` are handled as a random order among tied frames would be *on average*
(no arbitrary tie-breaking), so a constant scorer gets exactly the no-information values.
Non-finite confidences are an error (a caller must not hide them).

References: failure-detection AUROC and AURC / E-AURC (Geifman et al. 2019; Jaeger et al., ICLR
2023 "A call to reflect on evaluation practices for failure detection"); AUGRC (Traub et al.,
NeurIPS 2024, "Overcoming common flaws in the evaluation of selective classification
systems"): the area under the generalized risk (accepted AND wrong, over all frames) against
coverage, the primary metric of every confidence table here; ECE with equal-width bins (Guo et
al. 2017).
"""

from __future__ import annotations

import math

import numpy as np


def _check(conf, correct):
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != correct.shape:
        raise ValueError(f"conf {conf.shape} and correct {correct.shape} differ")
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidence holds non-finite values")
    return conf, correct


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def failure_auroc(conf, correct) -> float:
    """P(conf of a correct frame > conf of an incorrect frame), ties count 1/2. NaN if one class is absent."""
    conf, correct = _check(conf, correct)
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _rankdata(conf)
    return float((r[correct].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _tie_groups(conf: np.ndarray, correct: np.ndarray):
    """Frames sorted by conf descending, grouped by equal conf: (group sizes, group error counts)."""
    order = np.argsort(-conf, kind="stable")
    c, err = conf[order], (~correct[order]).astype(np.float64)
    boundaries = np.flatnonzero(np.diff(c)) + 1
    starts = np.concatenate([[0], boundaries])
    sizes = np.diff(np.concatenate([starts, [len(c)]]))
    errors = np.add.reduceat(err, starts) if len(c) else np.zeros(0)
    return c[starts], sizes, errors


def risk_coverage_curve(conf, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coverage, selective risk, threshold), one point per distinct confidence value.

    Point i: trust every frame with conf >= threshold[i]; coverage = fraction trusted,
    risk = error rate among the trusted. Coverage rises to 1; the last risk is the overall error.
    """
    conf, correct = _check(conf, correct)
    if len(conf) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    thr, sizes, errors = _tie_groups(conf, correct)
    n_cov = np.cumsum(sizes)
    return n_cov / len(conf), np.cumsum(errors) / n_cov, thr


def aurc(conf, correct) -> float:
    """Area under the risk-coverage curve: mean over k = 1..N of the risk of the k most confident
    frames (expected over random order within ties). Lower is better; a constant scorer gets
    the error rate."""
    conf, correct = _check(conf, correct)
    n = len(conf)
    if n == 0:
        return float("nan")
    # position i (0-based, sorted by conf descending) in tie group g: expected errors so far =
    # errors of earlier groups + (i - start_g + 1) * errors_g / size_g
    _, sizes, errors = _tie_groups(conf, correct)
    starts = np.cumsum(sizes) - sizes
    err_before = np.cumsum(errors) - errors
    g = np.repeat(np.arange(len(sizes)), sizes)
    i = np.arange(n)
    expected_err = err_before[g] + (i - starts[g] + 1) * errors[g] / sizes[g]
    return float(np.mean(expected_err / (i + 1)))


def generalized_risk_coverage_curve(conf, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coverage, generalized risk, threshold), one point per distinct confidence value.

    Point i: accept every frame with conf >= threshold[i]; generalized risk = (accepted and
    wrong) / N, over *all* frames (Traub et al. 2024), so it rises with coverage to the error rate.
    """
    conf, correct = _check(conf, correct)
    if len(conf) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    thr, sizes, errors = _tie_groups(conf, correct)
    return np.cumsum(sizes) / len(conf), np.cumsum(errors) / len(conf), thr


def augrc(conf, correct) -> float:
    """Area under the generalized risk-coverage curve (lower is better; 0 = no accepted error).

    The curve starts at (0, 0) and has one point per distinct confidence (tied frames are one
    threshold step: they are accepted together); between points it is linear (trapezoid rule),
    which is also the expected curve over random orders of the tied frames. A constant scorer
    gets error_rate / 2, a perfect ranking error_rate**2 / 2.
    """
    cov, risk, _ = generalized_risk_coverage_curve(conf, correct)
    if len(cov) == 0:
        return float("nan")
    x, y = np.concatenate([[0.0], cov]), np.concatenate([[0.0], risk])
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def optimal_aurc(correct) -> float:
    """AURC of the oracle that ranks every correct frame above every incorrect one."""
    correct = np.asarray(correct, dtype=bool).ravel()
    return aurc(correct.astype(np.float64), correct)


def eaurc(conf, correct) -> float:
    """Excess AURC = AURC - oracle AURC (0 = perfect ranking)."""
    return aurc(conf, correct) - optimal_aurc(correct)


def selective_risk_at_coverage(conf, correct, coverage: float = 0.8) -> float:
    """Error rate among the ceil(coverage * N) most confident frames (expected over ties)."""
    conf, correct = _check(conf, correct)
    n = len(conf)
    if n == 0:
        return float("nan")
    k = min(n, max(1, math.ceil(coverage * n - 1e-9)))
    _, sizes, errors = _tie_groups(conf, correct)
    rate = np.repeat(errors / sizes, sizes)  # expected error of each position in the ranking
    return float(rate[:k].sum() / k)


def trust_metrics(trusted, correct) -> dict:
    """How well the trust decision matches correctness (correct = should be trusted)."""
    trusted = np.asarray(trusted, dtype=bool).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    n = len(trusted)
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    tpr = float((trusted & correct).sum() / n_pos) if n_pos else float("nan")
    tnr = float((~trusted & ~correct).sum() / n_neg) if n_neg else float("nan")
    n_tr = int(trusted.sum())
    return {
        "trust_accuracy": float((trusted == correct).mean()) if n else float("nan"),
        "trust_balanced_accuracy": float(np.nanmean([tpr, tnr])) if n_pos or n_neg else float("nan"),
        "trusted_correct_rate": tpr,  # of the correct frames, fraction trusted
        "untrusted_incorrect_rate": tnr,  # of the wrong frames, fraction flagged
        "coverage": n_tr / n if n else float("nan"),
        "risk_trusted": float((~correct[trusted]).mean()) if n_tr else float("nan"),
        "risk_untrusted": float((~correct[~trusted]).mean()) if n - n_tr else float("nan"),
    }


def reliability_bins(probs, labels, n_bins: int = 15) -> dict:
    """Equal-width bins of the top-class probability: per bin count, mean confidence, accuracy."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=int).ravel()
    conf = p.max(axis=1)
    acc = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (lo, hi] bins, 0 in bin 0
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(b, weights=acc, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": mean_acc}


def ece(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error of the top-class probability (equal-width bins)."""
    r = reliability_bins(probs, labels, n_bins)
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    m = r["count"] > 0
    return float(np.sum(r["count"][m] / n * np.abs(r["accuracy"][m] - r["confidence"][m])))


def binary_ece(conf, correct, n_bins: int = 15) -> float:
    """ECE of the confidence read as P(correct): equal-width bins of conf, |mean conf - accuracy|."""
    conf, correct = _check(conf, correct)
    if len(conf) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    gap = np.abs(
        np.bincount(b, weights=conf, minlength=n_bins)
        - np.bincount(b, weights=correct.astype(float), minlength=n_bins)
    )
    return float(gap.sum() / count.sum())


def conformal_metrics(sets, labels, n_classes: int | None = None) -> dict:
    """Empirical coverage, mean set size, singleton rate and per-class coverage of prediction sets."""
    sets = np.asarray(sets, dtype=bool)
    y = np.asarray(labels, dtype=int).ravel()
    n_classes = sets.shape[1] if n_classes is None else n_classes
    if len(y) == 0:
        return {
            "coverage": float("nan"),
            "mean_set_size": float("nan"),
            "singleton_rate": float("nan"),
            "per_class_coverage": {str(c): float("nan") for c in range(n_classes)},
        }
    hit = sets[np.arange(len(y)), y]
    size = sets.sum(axis=1)
    per_class = {
        str(c): (float(hit[y == c].mean()) if np.any(y == c) else float("nan")) for c in range(n_classes)
    }
    return {
        "coverage": float(hit.mean()),
        "mean_set_size": float(size.mean()),
        "singleton_rate": float((size == 1).mean()),
        "per_class_coverage": per_class,
    }


def confidence_metrics(conf, correct, trusted=None, coverage: float = 0.8) -> dict:
    """Every ranking metric (and, given `trusted`, the decision metrics) in one flat dict."""
    conf, correct = _check(conf, correct)
    out = {
        "n": int(len(conf)),
        "cnn_accuracy": float(correct.mean()) if len(conf) else float("nan"),
        "augrc": augrc(conf, correct),
        "auroc": failure_auroc(conf, correct),
        "aurc": aurc(conf, correct),
        "eaurc": eaurc(conf, correct) if len(conf) else float("nan"),
        f"selective_risk@{coverage:g}": selective_risk_at_coverage(conf, correct, coverage),
        "conf_ece": binary_ece(conf, correct),
    }
    if trusted is not None:
        out.update(trust_metrics(trusted, correct))
    return out
