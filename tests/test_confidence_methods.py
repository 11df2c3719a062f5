"""Confidence methods and uncertainty metrics on constructed data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from lus_core.confidence import failure_metrics as M
from lus_core.confidence.base import TRUST_NOTHING, choose_threshold
from lus_core.confidence.baselines import TemperatureScaling
from lus_core.confidence.conformal import ConformalSets, row_uniforms
from lus_core.confidence.methods import METHODS, make_method, method_params
from lus_core.confidence.study import SVCConfidence, balanced_subsample
from lus_core.config import validate_config

C = 4


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def separable(n: int, seed: int, d: int = 6):
    """Frames whose correctness is written in the softmax (and the embedding): correct frames are
    peaked (top prob ~0.9), wrong frames flat (top prob ~0.4). Returns softmax, logits, embedding,
    labels, correct."""
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, C, n)
    correct = rng.random(n) < 0.6
    labels = np.where(correct, pred, (pred + rng.integers(1, C, n)) % C)
    peak = np.where(correct, rng.uniform(3.5, 4.5, n), rng.uniform(0.4, 0.8, n))
    logits = rng.normal(0, 0.05, (n, C))
    logits[np.arange(n), pred] += peak
    centers = 8.0 * np.eye(C, d)
    emb = centers[labels] + rng.normal(0, 0.5, (n, d))
    return softmax(logits), logits, emb, labels, correct


# -- registry / interface ---------------------------------------------------------------------
def test_registry_holds_every_method_and_config_reaches_constructors():
    assert set(METHODS) == {
        "msp",
        "temperature",
        "entropy",
        "conformal",
        "trust_score",
        "mlp",
        "svc",
        "svc_per_class",
    }
    cfg = validate_config({
        "seed": 7, "dataset": {"synthetic": {"enabled": True}},
        "confidence": {"conformal_alpha": 0.2, "svc_balance": "subsample", "params": {"mlp": {"hidden": 8}}},
    })
    assert make_method("conformal", cfg).alpha == 0.2
    assert make_method("svc_per_class", cfg).balance == "subsample"
    assert make_method("mlp", cfg).hidden == 8
    assert make_method("msp", cfg).seed == 7
    assert method_params("svc", validate_config({"dataset": {"synthetic": {"enabled": True}}}))["balance"] == \
        "class_weight"  # the schema's default
    with pytest.raises(KeyError):
        make_method("nope", cfg)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_fits_scores_thresholds(name):
    sm, lg, emb, y, correct = separable(240, seed=1)
    m = make_method(name, seed=0).fit(sm[:160], lg[:160], emb[:160], y[:160])
    conf = m.score(sm[160:], lg[160:], emb[160:])
    assert conf.shape == (80,) and np.all((conf >= 0) & (conf <= 1))
    t = m.choose_threshold(m.score(sm[:160], lg[:160], emb[:160]), correct[:160], "balanced_accuracy")
    assert np.array_equal(m.trust(sm[160:], lg[160:], emb[160:]), conf >= t)
    assert m.get_params()["seed"] == 0
    assert isinstance(m.fitted_params(), dict)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_separable_frames_reach_auroc_one(name):
    """Correct and wrong frames differ clearly in the softmax (and, for the trust score, wrong
    predictions sit in another class's embedding cluster): every method ranks them perfectly."""
    sm, lg, emb, y, correct = separable(400, seed=2)
    m = make_method(name, seed=0).fit(sm[:200], lg[:200], emb[:200], y[:200])
    conf = m.score(sm[200:], lg[200:], emb[200:])
    if name == "conformal":
        # conformal's confidence has resolution 1 / (n + 1): perfect up to ties
        assert M.failure_auroc(conf, correct[200:]) > 0.95
    else:
        assert M.failure_auroc(conf, correct[200:]) == 1.0
        assert M.eaurc(conf, correct[200:]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_are_deterministic_given_seed(name):
    sm, lg, emb, y, _ = separable(200, seed=3)
    sm = sm * 0.7 + 0.3 / C  # blur the classes so the learned models have something to learn
    a = (
        make_method(name, seed=5)
        .fit(sm[:120], lg[:120], emb[:120], y[:120])
        .score(sm[120:], lg[120:], emb[120:])
    )
    b = (
        make_method(name, seed=5)
        .fit(sm[:120], lg[:120], emb[:120], y[:120])
        .score(sm[120:], lg[120:], emb[120:])
    )
    assert np.array_equal(a, b)


# -- study models ---------------------------------------------------------------------------------
def test_svc_balance_modes_and_constant_fallback():
    sm, lg, emb, y, correct = separable(300, seed=4)
    for balance in ("class_weight", "subsample", "none"):
        m = SVCConfidence(seed=1, balance=balance).fit(sm, labels=y)
        assert M.failure_auroc(m.score(sm), correct) > 0.99
    with pytest.raises(ValueError):
        SVCConfidence(balance="smote")
    # every training frame correct: a constant, that outcome's rate
    m = SVCConfidence().fit(sm, labels=sm.argmax(axis=1))
    assert np.all(m.score(sm) == 1.0)


def test_balanced_subsample_is_balanced_and_seeded():
    y = np.array([True] * 90 + [False] * 10)
    idx = balanced_subsample(y, np.random.default_rng(0))
    assert y[idx].sum() == 10 and (~y[idx]).sum() == 10
    assert np.array_equal(idx, balanced_subsample(y, np.random.default_rng(0)))


def test_svc_per_class_has_one_model_per_predicted_class():
    sm, lg, emb, y, _ = separable(400, seed=5)
    m = make_method("svc_per_class", seed=0).fit(sm, labels=y)
    assert set(m.models_) == set(range(C))
    # a class never predicted in training falls back to the pooled model
    keep = sm.argmax(axis=1) != 3
    m = make_method("svc_per_class", seed=0).fit(sm[keep], labels=y[keep])
    assert 3 not in m.models_
    conf = m.score(sm[~keep])
    assert np.all((conf >= 0) & (conf <= 1))


# -- baselines -------------------------------------------------------------------------------------
def test_temperature_scaling_lowers_ece_of_overconfident_logits():
    rng = np.random.default_rng(6)
    n = 4000
    true_logits = rng.normal(0, 1.0, (n, C))
    y = (softmax(true_logits).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    over = 4.0 * true_logits  # the CNN is 4x over-confident
    ts = TemperatureScaling().fit(softmax(over[:2000]), over[:2000], labels=y[:2000])
    assert 3.0 < ts.temperature_ < 5.5
    before = M.ece(softmax(over[2000:]), y[2000:])
    after = M.ece(ts.calibrated(None, over[2000:]), y[2000:])
    assert after < 0.5 * before
    # without logits, log-softmax gives the same T
    ts2 = TemperatureScaling().fit(softmax(over[:2000]), None, labels=y[:2000])
    assert ts2.temperature_ == pytest.approx(ts.temperature_, rel=1e-3)
    # scaling never changes the predicted class
    assert np.array_equal(ts.calibrated(None, over).argmax(1), over.argmax(1))


def test_msp_and_entropy_extremes():
    p = np.array([[1.0, 0, 0, 0], [0.25] * 4])
    assert np.allclose(make_method("msp").score(p), [1.0, 0.25])
    assert np.allclose(make_method("entropy").score(p), [1.0, 0.0])


def test_trust_score_is_half_between_classes():
    emb = np.array([[0.0, 0.0], [10.0, 0.0]])
    m = make_method("trust_score", standardize=False).fit(np.eye(2), None, emb, np.array([0, 1]))
    mid = np.array([[5.0, 0.0], [1.0, 0.0], [9.0, 0.0]])
    conf = m.score(np.array([[0.9, 0.1]] * 3), None, mid)
    assert conf[0] == pytest.approx(0.5) and conf[1] == pytest.approx(0.9) and conf[2] == pytest.approx(0.1)


# -- conformal --------------------------------------------------------------------------------------
def _draw_conformal(rng, n):
    p = softmax(rng.normal(0, 2, (n, C)))
    q = 0.5 * p + 0.5 / C  # labels from a flatter distribution than the softmax: a miscalibrated CNN
    y = (q.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return p, y


@pytest.mark.parametrize(("score", "randomized"), [("aps", True), ("raps", True), ("lac", False)])
def test_conformal_coverage_is_one_minus_alpha_over_many_draws(score, randomized):
    alpha, n_cal, n_test, draws = 0.1, 400, 400, 80
    rng = np.random.default_rng(11)
    cov = []
    for r in range(draws):
        p, y = _draw_conformal(rng, n_cal + n_test)
        m = ConformalSets(seed=r, alpha=alpha, score=score, randomized=randomized)
        m.fit(p[:n_cal], labels=y[:n_cal])
        cov.append(M.conformal_metrics(m.prediction_sets(p[n_cal:]), y[n_cal:])["coverage"])
    cov = np.array(cov)
    se = cov.std(ddof=1) / np.sqrt(draws)
    expected = np.ceil((n_cal + 1) * (1 - alpha)) / (n_cal + 1)  # exact for continuous scores
    assert abs(cov.mean() - expected) < 4 * se + 0.002


def test_conformal_trust_means_a_one_class_set():
    rng = np.random.default_rng(12)
    p, y = _draw_conformal(rng, 1500)
    for alpha in (0.05, 0.2, 0.5):
        m = ConformalSets(seed=0, alpha=alpha).fit(p[:500], labels=y[:500])
        m.choose_threshold()
        size = m.set_size(p[500:])
        assert size.min() >= 1
        assert np.array_equal(m.trust(p[500:]), size == 1)
    # alpha too small for the calibration size: every class in every set, nothing trusted
    m = ConformalSets(alpha=0.001).fit(p[:50], labels=y[:50])
    m.choose_threshold()
    assert np.all(m.set_size(p) == C) and not m.trust(p).any()


def test_row_uniforms_depend_on_the_row_only():
    p = softmax(np.random.default_rng(0).normal(size=(50, C)))
    u = row_uniforms(p, 3)
    assert np.all((u >= 0) & (u < 1))
    assert np.array_equal(row_uniforms(p[::-1], 3), u[::-1])
    assert not np.array_equal(row_uniforms(p, 4), u)


# -- thresholds -------------------------------------------------------------------------------------
def test_choose_threshold_rules():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    correct = np.array([1, 1, 1, 1, 0, 0], bool)
    t = choose_threshold(conf, correct, "balanced_accuracy")
    assert 0.3 < t <= 0.6 and np.array_equal(conf >= t, correct)
    rng = np.random.default_rng(0)
    c = rng.random(1000)
    t = choose_threshold(c, rng.random(1000) < 0.7, "coverage", 0.8)
    assert (c >= t).mean() == pytest.approx(0.8, abs=1e-3)
    assert choose_threshold(conf, np.ones(6, bool)) <= conf.min()  # all correct: trust all
    assert choose_threshold(conf, np.zeros(6, bool)) == TRUST_NOTHING > 1.0  # all wrong: none
    with pytest.raises(ValueError):
        choose_threshold(conf, correct, "magic")


# -- metrics ----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_matches_sklearn_with_ties(pairs):
    conf = np.array([p[0] for p in pairs], float) / 5
    correct = np.array([p[1] for p in pairs])
    if correct.all() or not correct.any():
        assert np.isnan(M.failure_auroc(conf, correct))
    else:
        assert M.failure_auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf))


def test_aurc_of_a_random_scorer_is_the_error_rate():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.7
    err = 1 - correct.mean()
    vals = [M.aurc(rng.random(2000), correct) for _ in range(20)]
    assert np.mean(vals) == pytest.approx(err, abs=0.01)
    assert M.aurc(np.full(2000, 0.5), correct) == pytest.approx(err)  # constant: exactly
    # the oracle: E-AURC 0, and AURC = its closed form sum_k>n_pos (k - n_pos) / k / n
    assert M.eaurc(correct.astype(float), correct) == 0.0
    n, n_pos = len(correct), int(correct.sum())
    k = np.arange(n_pos + 1, n + 1)
    assert M.optimal_aurc(correct) == pytest.approx(np.sum((k - n_pos) / k) / n)


def test_risk_coverage_curve_and_selective_risk():
    conf = np.array([0.9, 0.9, 0.5, 0.1])
    correct = np.array([1, 0, 1, 0], bool)
    cov, risk, thr = M.risk_coverage_curve(conf, correct)
    assert np.allclose(cov, [0.5, 0.75, 1.0]) and np.allclose(risk, [0.5, 1 / 3, 0.5])
    assert np.allclose(thr, [0.9, 0.5, 0.1])
    assert M.selective_risk_at_coverage(conf, correct, 0.25) == pytest.approx(0.5)  # expected over the tie
    assert M.selective_risk_at_coverage(conf, correct, 0.75) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        M.aurc([np.nan, 1.0], [True, False])


def test_trust_metrics_and_ece_and_conformal_metrics():
    tm = M.trust_metrics([True, True, False, False], [True, False, False, False])
    assert tm["trust_accuracy"] == 0.75 and tm["trust_balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert tm["coverage"] == 0.5 and tm["risk_trusted"] == 0.5 and tm["risk_untrusted"] == 1.0
    # perfectly calibrated top-class probabilities: ECE ~ 0; over-confident: large
    rng = np.random.default_rng(1)
    p = softmax(rng.normal(0, 1, (20000, C)))
    y = (p.cumsum(axis=1) > rng.random((20000, 1))).argmax(axis=1)
    assert M.ece(p, y) < 0.02
    assert M.ece(softmax(np.log(p) * 4), y) > 0.15
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], bool)
    cm = M.conformal_metrics(sets, [0, 2, 2])
    assert cm["coverage"] == pytest.approx(2 / 3) and cm["mean_set_size"] == pytest.approx(4 / 3)
    assert cm["per_class_coverage"] == {"0": 1.0, "1": pytest.approx(np.nan, nan_ok=True), "2": 0.5}
    assert M.binary_ece(np.array([0.8] * 10), np.array([1] * 8 + [0] * 2, bool)) == pytest.approx(0.0)
