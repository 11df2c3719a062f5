"""Entry points of the `fit_confidence` and confidence-report steps.

Leakage rule: a confidence model (and its threshold) sees only rows with split == "train", whose
softmax is out-of-fold. `fit_confidence_model` is the only place a model is fitted and it raises
`LeakageError` when a test row reaches it. A method would score its own training rows
optimistically (a classifier, the kNN trust score, and a little even a fitted temperature), so
every method's training-row confidence is cross-fitted: refit without one training fold (the
predictions store's `fold` column = a group of training patients), score that fold, repeat. The
threshold is chosen on these scores; the training rows' trust decision in the output table uses
a threshold chosen without the row's fold, so the evaluation can score a configuration on the
training patients with nothing in-sample. The final model is fitted on all training rows. Methods that use an embedding (the trust score) read the predictions store's
`embedding_all` (one feature space for every frame, :mod:`lus_core.cnn.predictions`).
"""

from __future__ import annotations

import joblib
import numpy as np

import lus_core
from lus_core.cnn.predictions import Predictions, read_predictions
from lus_core.confidence import failure_metrics as M
from lus_core.confidence.base import ConfidenceMethod, choose_threshold
from lus_core.confidence.baselines import TemperatureScaling
from lus_core.confidence.conformal import ConformalSets
from lus_core.confidence.methods import METHODS, make_method, method_params
from lus_core.confidence.scores_file import write_scores
from lus_core.io_utils import atomic_path, config_json, write_json

SELECTIVE_COVERAGE = 0.8


class LeakageError(RuntimeError):
    """A test-patient row reached a fitting function."""


def assert_train_only(split) -> None:
    """Raise LeakageError unless every row is a training-patient row."""
    split = np.asarray(split).astype(str)
    bad = split != "train"
    if bad.any():
        raise LeakageError(
            f"{int(bad.sum())} non-training rows (split {sorted(set(split[bad]))}) reached fitting"
        )


def fit_rows(name: str, config: dict, rows: Predictions) -> ConfidenceMethod:
    assert_train_only(rows.split)
    return make_method(name, config).fit(rows.softmax, rows.logits, rows.embedding_all, rows.label)


def crossfit_groups(train: Predictions) -> tuple[np.ndarray | None, str]:
    """Groups for cross-fitting: the CV folds if there are >= 2, else patients, else none."""
    folds = np.unique(train.fold)
    if len(folds) >= 2:
        return train.fold, f"folds ({len(folds)})"
    patients = np.unique(train.patient)
    if len(patients) >= 2:
        k = min(5, len(patients))
        order = {p: i % k for i, p in enumerate(patients)}  # sorted patients dealt round-robin
        return np.array([order[p] for p in train.patient]), f"patients ({k} groups)"
    return None, "in-sample (fewer than 2 training patients)"


def cross_fit_scores(name: str, config: dict, train: Predictions) -> tuple[np.ndarray, str]:
    """Each training row scored by a model fitted without its group (its fold's patients)."""
    assert_train_only(train.split)
    groups, scheme = crossfit_groups(train)
    if groups is None:
        m = fit_rows(name, config, train)
        return m.score(train.softmax, train.logits, train.embedding_all), scheme
    conf = np.empty(len(train))
    for g in np.unique(groups):
        held = groups == g
        m = fit_rows(name, config, train.subset(~held))
        part = train.subset(held)
        conf[held] = m.score(part.softmax, part.logits, part.embedding_all)
    return conf, scheme


def fit_confidence_model(
    name: str, train: Predictions, config: dict
) -> tuple[ConfidenceMethod, np.ndarray, np.ndarray, str]:
    """Fit method `name` on training rows only and choose its threshold on out-of-fold scores.

    Every method is cross-fitted (also the ones with few parameters, e.g. the temperature or
    the conformal quantile), so no training row's confidence comes from a model that saw it.
    Returns (fitted model with threshold_, out-of-fold confidence of the training rows,
    out-of-fold trust decision of the training rows, how they were made). The out-of-fold
    trust decision uses a threshold chosen without the row's group, so that the evaluation can
    score a configuration on training patients without an in-sample threshold.
    """
    assert_train_only(train.split)
    cc = config["confidence"]
    rule, coverage = cc["threshold_rule"], float(cc["target_coverage"])
    model = fit_rows(name, config, train)
    conf_oof, scheme = cross_fit_scores(name, config, train)
    model.choose_threshold(conf_oof, train.correct, rule, coverage)
    groups, _ = crossfit_groups(train)
    if groups is None:
        trusted_oof = conf_oof >= model.threshold_
    else:
        trusted_oof = np.empty(len(train), dtype=bool)
        for g in np.unique(groups):
            held = groups == g
            t = choose_threshold(conf_oof[~held], train.correct[~held], rule, coverage)
            trusted_oof[held] = conf_oof[held] >= t
    return model, conf_oof, trusted_oof, scheme


def flat_conformal_metrics(sets, labels, n_classes: int) -> dict:
    """`metrics.conformal_metrics` as flat keys: conformal_coverage, conformal_mean_set_size,
    conformal_singleton_rate, conformal_coverage_class{c}."""
    m = M.conformal_metrics(sets, labels, n_classes)
    out = {f"conformal_{k}": v for k, v in m.items() if k != "per_class_coverage"}
    out.update({f"conformal_coverage_class{c}": v for c, v in m["per_class_coverage"].items()})
    return out


def _metrics(conf, rows: Predictions, trusted, n_classes: int, model: ConfidenceMethod) -> dict:
    out = M.confidence_metrics(conf, rows.correct, trusted, SELECTIVE_COVERAGE)
    if len(rows):
        out["cnn_ece"] = M.ece(rows.softmax, rows.label)
        if isinstance(model, TemperatureScaling):
            out["cnn_ece_temperature"] = M.ece(model.calibrated(rows.softmax, rows.logits), rows.label)
    if isinstance(model, ConformalSets):
        out.update(flat_conformal_metrics(model.prediction_sets(rows.softmax), rows.label, n_classes))
    return out


def _finite(obj):
    """JSON-safe: NaN / inf become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_fit_confidence(predictions_h5, method: str, out_model, out_csv, out_json, config: dict) -> None:
    """Fit one confidence method on the training rows of a predictions store; score every row.

    Writes `out_model` (joblib of the fitted method), `out_csv` (frame_id, split, confidence,
    trusted, set_size: training rows carry their out-of-fold confidence, the one the threshold
    was chosen on, and an out-of-fold trust decision whose threshold was chosen without the
    row's group) and `out_json` (method, params, threshold, train (oof) and test metrics, config).
    """
    if method not in METHODS:
        raise KeyError(f"unknown confidence method {method!r}; known: {sorted(METHODS)}")
    pred = read_predictions(predictions_h5)
    n_classes = pred.softmax.shape[1]
    if len(config["classes"]) != n_classes:
        raise ValueError(f"config has {len(config['classes'])} classes, predictions have {n_classes}")
    is_train = pred.split == "train"
    unknown = set(np.unique(pred.split)) - {"train", "test"}
    if unknown:
        raise ValueError(f"unexpected split values {sorted(unknown)}")
    if not is_train.any():
        raise ValueError("no training rows to fit a confidence model on")
    train, test = pred.subset(is_train), pred.subset(~is_train)

    model, conf_oof, trusted_oof, scheme = fit_confidence_model(method, train, config)
    conf_test = model.score(test.softmax, test.logits, test.embedding_all) if len(test) else np.zeros(0)
    trusted_test = conf_test >= model.threshold_

    conf = np.empty(len(pred))
    conf[is_train], conf[~is_train] = conf_oof, conf_test
    trusted = np.empty(len(pred), dtype=bool)
    trusted[is_train], trusted[~is_train] = trusted_oof, trusted_test
    set_size = model.set_size(pred.softmax) if isinstance(model, ConformalSets) else None
    with atomic_path(out_model) as tmp:
        joblib.dump(model, tmp)
    write_scores(out_csv, pred.frame_id, pred.split, conf, trusted, set_size)
    record = {
        "method": method,
        "backbone": pred.attrs.get("backbone"),
        "code_version": lus_core.__version__,
        "params": model.get_params(),
        "config_params": method_params(method, config),
        "fitted": model.fitted_params(),
        "threshold": model.threshold_,
        "threshold_rule": model.threshold_rule_,
        "target_coverage": float(config["confidence"]["target_coverage"]),
        "oof_scores": scheme,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "n_train_patients": int(len(np.unique(train.patient))),
        "n_test_patients": int(len(np.unique(test.patient))),
        "train_oof_metrics": _metrics(conf_oof, train, trusted_oof, n_classes, model),
        "test_metrics": _metrics(conf_test, test, trusted_test, n_classes, model),
        "config": config_json(config),
    }
    write_json(out_json, _finite(record))
