"""fit_confidence / confidence report entry points on tiny predictions stores (R/predictions/{backbone}.h5)."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest

from lus_core.cnn.predictions import Predictions, read_predictions
from lus_core.cnn.predictions import write_predictions as write_store
from lus_core.confidence import failure_metrics as M
from lus_core.confidence.base import ConfidenceMethod, choose_threshold
from lus_core.confidence.methods import METHODS
from lus_core.confidence.report import run_confidence_report
from lus_core.confidence.step import LeakageError, fit_confidence_model, run_fit_confidence
from lus_core.config import validate_config
from lus_core.workflow.step_config import step_config

C, D = 4, 6
N_PAT, FRAMES, N_TEST = 9, 16, 3


def config(**conf):
    c = {
        "methods": sorted(METHODS),
        "threshold_rule": "balanced_accuracy",
        "target_coverage": 0.8,
        "conformal_alpha": 0.1,
        "svc_balance": "class_weight",
    }
    c.update(conf)
    full = validate_config({"seed": 3, "classes": list(range(C)), "dataset": {"synthetic": {"enabled": True}},
                            "confidence": c})
    return step_config(full, "fit_confidence")  # what the step receives


def write_predictions(path, seed=0, test_values=None):
    """A predictions store like `infer` writes: patients p0..p8, the first N_TEST are test patients
    (fold -1), the rest in 3 folds. `test_values(rng, n)` replaces the test rows' contents."""
    rng = np.random.default_rng(seed)
    n = N_PAT * FRAMES
    pidx = np.repeat(np.arange(N_PAT), FRAMES)
    label = rng.integers(0, C, n)
    emb = 3.0 * np.eye(C, D)[label] + rng.normal(0, 1.0, (n, D))
    logits = 3.0 * (np.eye(C)[label] + rng.normal(0, 0.8, (n, C)))
    is_test = pidx < N_TEST
    if test_values is not None:
        label[is_test], logits[is_test], emb[is_test] = test_values(
            np.random.default_rng(seed + 1), int(is_test.sum())
        )
    z = logits - logits.max(axis=1, keepdims=True)
    sm = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return write_store(path, Predictions(
        frame_id=np.arange(n, dtype=np.int64), label=label, patient=np.array([f"p{i}" for i in pidx]),
        video=np.array([f"p{i}_v0" for i in pidx]), split=np.where(is_test, "test", "train"),
        fold=np.where(is_test, -1, (pidx - N_TEST) % 3), logits=logits, softmax=sm, embedding_oof=emb,
        embedding_all=emb, attrs={"backbone": "tiny", "classes": json.dumps(list(range(C))), "config": "{}"},
    ))


def fit(tmp_path, h5, method, cfg, tag=""):
    out = {k: tmp_path / f"{method}{tag}.{k}" for k in ("joblib", "csv", "json")}
    run_fit_confidence(h5, method, out["joblib"], out["csv"], out["json"], cfg)
    return out


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    return write_predictions(tmp_path_factory.mktemp("pred") / "tiny.h5")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_writes_well_formed_outputs(tmp_path, h5, method):
    out = fit(tmp_path, h5, method, config())
    pred = read_predictions(h5)
    table = pd.read_csv(out["csv"])
    rec = json.loads(out["json"].read_text())
    model = joblib.load(out["joblib"])

    assert list(table.columns) == ["frame_id", "split", "confidence", "trusted", "set_size"]
    assert np.array_equal(table["frame_id"], pred.frame_id) and np.array_equal(table["split"], pred.split)
    assert table["confidence"].between(0, 1).all()
    is_test = (table["split"] == "test").to_numpy()
    trusted, conf = table["trusted"].to_numpy(bool), table["confidence"].to_numpy()
    assert np.array_equal(trusted[is_test], conf[is_test] >= rec["threshold"])
    # training rows: the trust decision of a threshold chosen without the row's fold
    correct = pred.correct
    for g in np.unique(pred.fold[~is_test]):
        held, other = ~is_test & (pred.fold == g), ~is_test & (pred.fold != g)
        t = choose_threshold(conf[other], correct[other], "balanced_accuracy", 0.8)
        assert np.array_equal(trusted[held], conf[held] >= t)
    # the saved model reproduces the test rows
    test = pred.subset(pred.split == "test")
    conf = model.score(test.softmax, test.logits, test.embedding_all)
    assert np.allclose(conf, table.loc[table["split"] == "test", "confidence"], atol=1e-12)
    assert model.threshold_ == rec["threshold"]

    assert rec["method"] == method and rec["backbone"] == "tiny"
    assert rec["n_train"] == (N_PAT - N_TEST) * FRAMES and rec["n_test"] == N_TEST * FRAMES
    assert json.loads(rec["config"]) == config()
    assert rec["params"]["seed"] == 3
    for part in ("train_oof_metrics", "test_metrics"):
        assert {
            "auroc",
            "aurc",
            "eaurc",
            "selective_risk@0.8",
            "trust_accuracy",
            "trust_balanced_accuracy",
            "coverage",
            "cnn_ece",
        } <= set(rec[part])
    if method == "conformal":
        assert table["set_size"].between(1, C).all()
        assert np.array_equal(table["trusted"][is_test], table["set_size"][is_test] == 1)
        keys = {
            "conformal_coverage",
            "conformal_mean_set_size",
            *(f"conformal_coverage_class{c}" for c in range(C)),
        }
        assert keys <= set(rec["test_metrics"])
        assert rec["test_metrics"]["conformal_mean_set_size"] == pytest.approx(
            table.loc[table["split"] == "test", "set_size"].mean()
        )
        assert rec["threshold_rule"] == "conformal_single_class_set"
    else:
        assert table["set_size"].isna().all()
        assert rec["threshold_rule"] == "balanced_accuracy"
    if method == "temperature":
        assert rec["fitted"]["temperature"] > 1.0  # the fake CNN is over-confident
    if METHODS[method].learned:
        assert rec["oof_scores"].startswith("folds (3)")


def test_coverage_rule_trusts_the_target_fraction_of_training_frames(tmp_path, h5):
    out = fit(tmp_path, h5, "msp", config(threshold_rule="coverage", target_coverage=0.7))
    t = pd.read_csv(out["csv"])
    thr = json.loads(out["json"].read_text())["threshold"]
    train = t[t["split"] == "train"]
    assert (train["confidence"] >= thr).mean() == pytest.approx(0.7, abs=1.01 / len(train))


def test_a_test_row_reaching_fit_raises(h5):
    pred = read_predictions(h5)
    with pytest.raises(LeakageError):
        fit_confidence_model("msp", pred, config())
    train = pred.subset(pred.split == "train")
    model, conf_oof, _, _ = fit_confidence_model("msp", train, config())
    assert len(conf_oof) == len(train)


def _poison(rng, n):
    """Absurd but finite test rows: labels all 0, logits 1e4-scale, embeddings 1e6 away."""
    return np.zeros(n, int), rng.normal(0, 1e4, (n, C)), np.full((n, D), 1e6) + rng.normal(0, 1, (n, D))


def _other(rng, n):
    return rng.integers(0, C, n), rng.normal(0, 3, (n, C)), rng.normal(0, 1, (n, D))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fitting_never_reads_test_rows(tmp_path, monkeypatch, method):
    """Fit with the test rows poisoned, then with other test rows: the model, its threshold and
    every training row's output are the same; fit itself never saw a poisoned value."""
    seen = []
    original_fit = ConfidenceMethod.fit

    def spy(self, softmax, logits=None, embedding=None, labels=None):
        seen.append((np.asarray(logits), np.asarray(embedding)))
        return original_fit(self, softmax, logits, embedding, labels)

    monkeypatch.setattr(ConfidenceMethod, "fit", spy)
    a = fit(tmp_path, write_predictions(tmp_path / "a.h5", test_values=_poison), method, config(), "a")
    assert seen and all(np.abs(lg).max() < 1e3 and np.abs(e).max() < 1e3 for lg, e in seen)
    b = fit(tmp_path, write_predictions(tmp_path / "b.h5", test_values=_other), method, config(), "b")

    ja, jb = json.loads(a["json"].read_text()), json.loads(b["json"].read_text())
    for key in ("threshold", "params", "fitted", "train_oof_metrics"):
        assert ja[key] == jb[key], key
    ta, tb = pd.read_csv(a["csv"]), pd.read_csv(b["csv"])
    tr = ta["split"] == "train"
    pd.testing.assert_frame_equal(ta[tr], tb[tr])
    probe = read_predictions(tmp_path / "b.h5")
    ma, mb = joblib.load(a["joblib"]), joblib.load(b["joblib"])
    assert np.array_equal(
        ma.score(probe.softmax, probe.logits, probe.embedding_all),
        mb.score(probe.softmax, probe.logits, probe.embedding_all),
    )


@pytest.mark.parametrize("method", ["conformal", "svc_per_class", "trust_score"])
def test_fit_confidence_is_deterministic(tmp_path, h5, method):
    a = fit(tmp_path, h5, method, config(svc_balance="subsample"), "a")
    b = fit(tmp_path, h5, method, config(svc_balance="subsample"), "b")
    assert a["csv"].read_text() == b["csv"].read_text()
    assert a["json"].read_text() == b["json"].read_text()


def test_config_class_count_must_match(tmp_path, h5):
    cfg = config()
    cfg["classes"] = [0, 1, 2]
    with pytest.raises(ValueError, match="classes"):
        fit(tmp_path, h5, "msp", cfg)


def test_report_has_one_row_per_method_and_both_figures(tmp_path, h5):
    methods = sorted(METHODS)
    outs = [fit(tmp_path, h5, m, config()) for m in methods]
    table_csv, risk, rel = tmp_path / "table.csv", tmp_path / "risk.png", tmp_path / "rel.png"
    run_confidence_report(
        h5, [o["json"] for o in outs], [o["csv"] for o in outs], table_csv, risk, rel, config()
    )
    table = pd.read_csv(table_csv)
    assert list(table["method"]) == methods
    assert list(table.columns[:3]) == ["backbone", "method", "augrc"]  # the primary column
    assert {
        "oof_augrc",
        "auroc",
        "aurc",
        "eaurc",
        "selective_risk@0.8",
        "trust_accuracy",
        "trust_balanced_accuracy",
        "cnn_ece_before_ts",
        "cnn_ece_after_ts",
        "conformal_coverage",
        "conformal_mean_set_size",
        "oof_auroc",
    } <= set(table.columns)
    temperature = json.loads(outs[methods.index("temperature")]["json"].read_text())["fitted"]["temperature"]
    assert table["temperature"].iloc[0] == pytest.approx(temperature)
    # the table agrees with each method's own JSON
    for o, (_, row) in zip(outs, table.iterrows(), strict=True):
        rec = json.loads(o["json"].read_text())
        assert row["auroc"] == pytest.approx(rec["test_metrics"]["auroc"])
        assert row["augrc"] == pytest.approx(rec["test_metrics"]["augrc"])
    pred = read_predictions(h5)
    test = pred.subset(pred.split == "test")
    assert table["cnn_accuracy"].iloc[0] == pytest.approx(test.correct.mean())
    assert table["cnn_ece_before_ts"].iloc[0] == pytest.approx(M.ece(test.softmax, test.label))
    for png in (risk, rel):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
