"""Metric functions against hand-computed values and sklearn; the patient bootstrap; the
failure-detection metrics against brute-force definitions."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    recall_score,
)
from sklearn.metrics import confusion_matrix as sk_cm

from lus_core import metrics as M

# a small example worked by hand (4 classes, 8 frames)
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 3, 3])
Y_PRED = np.array([0, 1, 1, 1, 2, 3, 3, 1])


def test_confusion_matrix_by_hand():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_array_equal(cm, sk_cm(Y_TRUE, Y_PRED, labels=range(4)))


def test_point_metrics_by_hand():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    np.testing.assert_allclose(M.per_class_recall(Y_TRUE, Y_PRED, 4), [0.5, 1.0, 0.5, 0.5])
    assert M.balanced_accuracy(Y_TRUE, Y_PRED, 4) == pytest.approx(0.625)
    # F1 per class = 2TP / (row + col): 2/3, 4/6, 2/3, 2/4
    assert M.macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx((2 / 3 + 4 / 6 + 2 / 3 + 2 / 4) / 4)


def test_quadratic_kappa_by_hand():
    # weights w_ij = (i-j)^2.  Observed weighted disagreement: cells (0,1), (2,3), (3,1)
    # -> 1 + 1 + 4 = 6.  Expected: sum_ij w_ij r_i c_j / n with row sums r = [2,2,2,2],
    # column sums c = [1,4,1,2], n = 8.  sum_i r_i w_ij = 2 * [14, 6, 6, 14] = [28, 12, 12, 28];
    # dotted with c: 28 + 48 + 12 + 56 = 144; / 8 = 18.  kappa = 1 - 6 / 18 = 2/3.
    r = np.array([2, 2, 2, 2])
    c = np.array([1, 4, 1, 2])
    w = (np.arange(4)[:, None] - np.arange(4)[None, :]) ** 2
    assert (w * np.outer(r, c)).sum() / 8 == pytest.approx(18.0)
    assert M.quadratic_weighted_kappa(Y_TRUE, Y_PRED, 4) == pytest.approx(2 / 3)
    assert M.quadratic_weighted_kappa(Y_TRUE, Y_PRED, 4) == pytest.approx(
        cohen_kappa_score(Y_TRUE, Y_PRED, weights="quadratic", labels=list(range(4))))


def test_perfect_and_degenerate():
    y = np.array([0, 1, 2, 3, 3])
    assert M.quadratic_weighted_kappa(y, y, 4) == pytest.approx(1.0)
    assert M.accuracy(y, y) == 1.0
    # a single class everywhere: kappa undefined -> NaN (no crash)
    assert np.isnan(M.quadratic_weighted_kappa([1, 1], [1, 1], 4))
    # empty input
    assert np.isnan(M.accuracy(np.array([], int), np.array([], int), 4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=60))
def test_against_sklearn(pairs):
    yt = np.array([p[0] for p in pairs])
    yp = np.array([p[1] for p in pairs])
    assert M.accuracy(yt, yp, 4) == pytest.approx(np.mean(yt == yp))
    assert M.macro_f1(yt, yp, 4) == pytest.approx(f1_score(yt, yp, average="macro", zero_division=0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert M.balanced_accuracy(yt, yp, 4) == pytest.approx(balanced_accuracy_score(yt, yp))
        k_sk = cohen_kappa_score(yt, yp, weights="quadratic", labels=list(range(4)))
    k = M.quadratic_weighted_kappa(yt, yp, 4)
    if np.isnan(k):
        assert np.isnan(k_sk) or k_sk == 0.0 or len(set(yt) | set(yp)) == 1
    else:
        assert k == pytest.approx(k_sk)
    present = np.unique(yt)
    np.testing.assert_allclose(M.per_class_recall(yt, yp, 4)[present],
                               recall_score(yt, yp, labels=present, average=None, zero_division=0))


def test_stacked_confusion_matrices():
    cms = np.stack([M.confusion_matrix(Y_TRUE, Y_PRED, 4), M.confusion_matrix(Y_TRUE, Y_TRUE, 4)])
    np.testing.assert_allclose(M.cm_accuracy(cms), [5 / 8, 1.0])
    np.testing.assert_allclose(M.cm_qwk(cms), [2 / 3, 1.0])


def _data(seed=0, n_pat=8, per=12):
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_pat)], per)
    y = rng.integers(0, 4, n_pat * per)
    a = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 4, len(y)))
    b = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 4, len(y)))
    return y, a, b, patients


def test_bootstrap_reproducible_and_brackets_estimate():
    y, a, _, pats = _data()
    r1 = M.bootstrap_ci(M.accuracy, y, a, pats, n_boot=500, ci=0.95, seed=3, n_classes=4)
    r2 = M.bootstrap_ci("accuracy", y, a, pats, n_boot=500, ci=0.95, seed=3, n_classes=4)
    assert r1 == r2
    assert r1.estimate == pytest.approx(M.accuracy(y, a))
    assert r1.lo <= r1.estimate <= r1.hi
    assert 0 < r1.hi - r1.lo < 0.5
    r3 = M.bootstrap_ci(M.accuracy, y, a, pats, n_boot=500, ci=0.95, seed=4, n_classes=4)
    assert (r3.lo, r3.hi) != (r1.lo, r1.hi)


def test_bootstrap_resamples_patients_not_frames():
    # every patient is either all right or all wrong: the CI must be as wide as patient-level
    # sampling implies (frame-level resampling of 400 frames would give +-0.05)
    pats = np.repeat([f"p{i}" for i in range(4)], 100)
    y = np.zeros(400, int)
    pred = np.where(np.isin(pats, ["p0", "p1"]), 0, 1)
    r = M.bootstrap_ci(M.accuracy, y, pred, pats, n_boot=2000, ci=0.95, seed=0, n_classes=2)
    assert r.hi - r.lo >= 0.5


def test_fast_path_equals_generic_loop():
    y, a, _, pats = _data(1, n_pat=5, per=6)

    def plain_accuracy(t, p):  # no .cm attribute -> slow loop over resamples
        return float(np.mean(t == p))

    fast = M.bootstrap_ci(M.accuracy, y, a, pats, n_boot=200, ci=0.9, seed=7, n_classes=4)
    slow = M.bootstrap_ci(plain_accuracy, y, a, pats, n_boot=200, ci=0.9, seed=7)
    assert fast.lo == pytest.approx(slow.lo)
    assert fast.hi == pytest.approx(slow.hi)
    assert fast.mean == pytest.approx(slow.mean)


def test_paired_diff_zero_for_identical_predictions():
    y, a, _, pats = _data()
    d = M.paired_bootstrap_diff(M.accuracy, y, a, a, pats, n_boot=300, seed=0, n_classes=4)
    assert d.diff == 0.0 and d.lo == 0.0 and d.hi == 0.0
    assert not d.significant
    assert d.p_value == 1.0


def test_paired_diff_sign_and_significance():
    y, a, b, pats = _data(2, n_pat=12, per=20)
    d = M.paired_bootstrap_diff(M.accuracy, y, a, b, pats, n_boot=1000, seed=0, n_classes=4)
    assert d.diff == pytest.approx(M.accuracy(y, a) - M.accuracy(y, b))
    assert d.diff > 0 and d.lo > 0 and d.significant and d.p_value < 0.05
    r = M.paired_bootstrap_diff(M.macro_f1, y, b, a, pats, n_boot=1000, seed=0, n_classes=4)
    assert r.diff < 0 and r.hi < 0 and r.significant
    # paired interval is narrower than what two independent intervals would suggest
    ca = M.bootstrap_ci(M.accuracy, y, a, pats, n_boot=1000, seed=0, n_classes=4)
    assert d.hi - d.lo < ca.hi - ca.lo + (ca.hi - ca.lo)


def test_paired_diff_not_significant_for_noise():
    rng = np.random.default_rng(5)
    pats = np.repeat([f"p{i}" for i in range(6)], 10)
    y = rng.integers(0, 4, 60)
    a = y.copy()
    b = y.copy()
    a[[0, 15]] = (y[[0, 15]] + 1) % 4  # one frame apart in accuracy
    b[[0, 33, 50]] = (y[[0, 33, 50]] + 1) % 4
    d = M.paired_bootstrap_diff(M.accuracy, y, a, b, pats, n_boot=1000, seed=0, n_classes=4)
    assert d.diff == pytest.approx(1 / 60)
    assert d.lo <= 0 <= d.hi and not d.significant and d.p_value > 0.05


def test_video_level_aggregation():
    videos = np.array(["v1"] * 4 + ["v2"] * 3)
    pats = np.array(["a"] * 4 + ["b"] * 3)
    y = np.array([1, 1, 2, 2, 0, 0, 0])
    p = np.array([0, 3, 1, 1, 0, 1, 1])
    vids, t, pr, vp = M.video_level(y, p, videos, pats, "max", 4)
    assert vids.tolist() == ["v1", "v2"] and vp.tolist() == ["a", "b"]
    assert t.tolist() == [2, 0] and pr.tolist() == [3, 1]
    _, t, pr, _ = M.video_level(y, p, videos, pats, "mean", 4)
    assert t.tolist() == [2, 0]  # mean 1.5 rounds half up to 2
    assert pr.tolist() == [1, 1]  # 1.25 -> 1, 0.67 -> 1
    _, t, pr, _ = M.video_level(y, p, videos, pats, "majority", 4)
    assert t.tolist() == [1, 0]  # tie 1/2 -> lower class
    assert pr.tolist() == [1, 1]


def test_resample_counts_shape_and_sum():
    c = M.patient_resample_counts(7, 50, seed=1)
    assert c.shape == (50, 7)
    assert (c.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(c, M.patient_resample_counts(7, 50, seed=1))


# --------------------------------------------------------------------------- failure detection
# Brute-force definitions, written independently of lus_core.confidence.failure_metrics: enumerate the
# thresholds (or the orders of tied frames) one by one.


def _bf_auroc(conf, correct):
    """P(conf of a right frame > conf of a wrong one), ties 1/2: every pair counted."""
    pos, neg = conf[correct], conf[~correct]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def _tie_orders(conf):
    """Every order of the frames by confidence, most confident first, tied frames in any order."""
    return [perm for perm in itertools.permutations(range(len(conf)))
            if all(conf[perm[i]] >= conf[perm[i + 1]] for i in range(len(perm) - 1))]


def _bf_aurc(conf, correct):
    """Mean over k of the error rate among the k most confident, averaged over the tie orders."""
    vals = []
    for perm in _tie_orders(conf):
        wrong = [not correct[i] for i in perm]
        vals.append(np.mean([sum(wrong[:k]) / k for k in range(1, len(conf) + 1)]))
    return float(np.mean(vals))


def _bf_generalized_curve(conf, correct):
    """(coverage, generalized risk) at every threshold, from accepting nothing to all."""
    n = len(conf)
    points = [(0.0, 0.0)]
    for t in sorted(set(conf.tolist()), reverse=True):
        accepted = [c >= t for c in conf]
        points.append((sum(accepted) / n, sum(a and not ok for a, ok in zip(accepted, correct, strict=True)) / n))
    return points


def _bf_augrc(conf, correct):
    """Trapezoids between consecutive thresholds (a tie group is one threshold step)."""
    pts = _bf_generalized_curve(conf, correct)
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts))


def _bf_augrc_over_orders(conf, correct):
    """The same area, as the mean over tie orders of the per-frame curve (one step per frame)."""
    n = len(conf)
    vals = []
    for perm in _tie_orders(conf):
        y = np.concatenate([[0.0], np.cumsum([not correct[i] for i in perm]) / n])
        vals.append(np.sum((y[1:] + y[:-1]) / 2) / n)
    return float(np.mean(vals))


CASES = [
    # the example: six frames, tied confidences
    (np.array([0.9, 0.9, 0.7, 0.7, 0.7, 0.2]), np.array([1, 0, 1, 0, 1, 0], bool)),
    (np.array([0.5] * 6), np.array([1, 1, 0, 1, 0, 1], bool)),  # all tied
    (np.array([0.1, 0.4, 0.35, 0.8, 0.8]), np.array([0, 1, 0, 1, 1], bool)),  # perfect ranking
    (np.array([0.9, 0.8, 0.3, 0.3, 0.1, 0.6, 0.6]), np.array([0, 1, 1, 0, 1, 0, 1], bool)),
    (np.array([0.3, 0.2]), np.array([1, 1], bool)),  # no failure
]


@pytest.mark.parametrize("conf,correct", CASES)
def test_failure_metrics_equal_their_brute_force_definitions(conf, correct):
    from lus_core.confidence import failure_metrics as CM

    assert CM.augrc(conf, correct) == pytest.approx(_bf_augrc(conf, correct), abs=1e-12)
    assert CM.augrc(conf, correct) == pytest.approx(_bf_augrc_over_orders(conf, correct), abs=1e-12)
    assert CM.aurc(conf, correct) == pytest.approx(_bf_aurc(conf, correct), abs=1e-12)
    oracle = _bf_aurc(correct.astype(float), correct)
    assert CM.eaurc(conf, correct) == pytest.approx(_bf_aurc(conf, correct) - oracle, abs=1e-12)
    bf_auroc = _bf_auroc(conf, correct)
    if np.isnan(bf_auroc):
        assert np.isnan(CM.failure_auroc(conf, correct))
    else:
        assert CM.failure_auroc(conf, correct) == pytest.approx(bf_auroc, abs=1e-12)
    cov, grisk, _ = CM.generalized_risk_coverage_curve(conf, correct)
    np.testing.assert_allclose(np.c_[cov, grisk], _bf_generalized_curve(conf, correct)[1:], atol=1e-12)
    cov, risk, thr = CM.risk_coverage_curve(conf, correct)
    for c, r, t in zip(cov, risk, thr, strict=True):
        kept = conf >= t
        assert c == pytest.approx(kept.mean()) and r == pytest.approx((~correct[kept]).mean())


def test_augrc_known_values_and_random_cases():
    from lus_core.confidence import failure_metrics as CM

    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.7
    err = 1 - correct.mean()
    assert CM.augrc(np.full(400, 0.3), correct) == pytest.approx(err / 2)  # constant scorer
    assert CM.augrc(correct.astype(float), correct) == pytest.approx(err ** 2 / 2)  # perfect ranking
    for _ in range(5):  # ties from rounding, against the threshold enumeration
        conf = np.round(rng.random(60), 1)
        ok = rng.random(60) < 0.6
        assert CM.augrc(conf, ok) == pytest.approx(_bf_augrc(conf, ok), abs=1e-12)
        assert CM.failure_auroc(conf, ok) == pytest.approx(_bf_auroc(conf, ok), abs=1e-12)
