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
`embedding_all` (one feature space for every frame, :mod:`lus_core.predictions`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import lus_core
from lus_core.io_utils import atomic_path, config_json, write_json
from lus_core.predictions import Predictions, read_predictions

from . import METHODS, make_method, method_params
from . import metrics as M
from .base import ConfidenceMethod, choose_threshold
from .baselines import TemperatureScaling
from .conformal import ConformalSets

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


def _fit_rows(name: str, config: dict, rows: Predictions) -> ConfidenceMethod:
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
        m = _fit_rows(name, config, train)
        return m.score(train.softmax, train.logits, train.embedding_all), scheme
    conf = np.empty(len(train))
    for g in np.unique(groups):
        held = groups == g
        m = _fit_rows(name, config, train.subset(~held))
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
    cc = config.get("confidence", {}) or {}
    rule, coverage = cc.get("threshold_rule", "balanced_accuracy"), float(cc.get("target_coverage", 0.8))
    model = _fit_rows(name, config, train)
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
    import joblib

    if method not in METHODS:
        raise KeyError(f"unknown confidence method {method!r}; known: {sorted(METHODS)}")
    pred = read_predictions(predictions_h5)
    n_classes = pred.softmax.shape[1]
    if "classes" in config and len(config["classes"]) != n_classes:
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
    table = pd.DataFrame(
        {"frame_id": pred.frame_id, "split": pred.split, "confidence": conf, "trusted": trusted}
    )
    if isinstance(model, ConformalSets):
        table["set_size"] = model.set_size(pred.softmax).astype(int)
    else:
        table["set_size"] = pd.array([pd.NA] * len(pred), dtype="Int64")

    with atomic_path(out_model) as tmp:
        joblib.dump(model, tmp)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    cc = config.get("confidence", {}) or {}
    record = {
        "method": method,
        "backbone": pred.attrs.get("backbone"),
        "code_version": lus_core.__version__,
        "params": model.get_params(),
        "config_params": method_params(method, config),
        "fitted": model.fitted_params(),
        "threshold": model.threshold_,
        "threshold_rule": model.threshold_rule_,
        "target_coverage": float(cc.get("target_coverage", 0.8)),
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


# -- report ------------------------------------------------------------------------------------
def _temperature_for_report(method_records: list[dict], train: Predictions, config: dict) -> float:
    for rec in method_records:
        t = (rec.get("fitted") or {}).get("temperature") if rec.get("method") == "temperature" else None
        if t:
            return float(t)
    return _fit_rows("temperature", config, train).temperature_ if len(train) else 1.0


def run_confidence_report(
    predictions_h5,
    method_jsons: list,
    method_csvs: list,
    out_table_csv,
    out_risk_png,
    out_reliability_png,
    config: dict,
) -> None:
    """One table row per method (test-patient metrics, AUGRC first, plus out-of-fold AUGRC / AUROC / AURC), a
    risk-coverage plot of every method and the reliability diagram before / after temperature
    scaling, for one backbone."""
    from lus_core.io_utils import read_json

    from .plots import plot_reliability, plot_risk_coverage

    if len(method_jsons) != len(method_csvs):
        raise ValueError("one JSON per CSV")
    pred = read_predictions(predictions_h5)
    is_test = pred.split == "test"
    test, train = pred.subset(is_test), pred.subset(pred.split == "train")
    backbone = pred.attrs.get("backbone", "")
    records = [read_json(p) for p in method_jsons]
    temperature = _temperature_for_report(records, train, config)
    ts = TemperatureScaling(seed=int(config.get("seed", 0)))
    ts.temperature_ = temperature
    ece_before = M.ece(test.softmax, test.label) if len(test) else float("nan")
    probs_after = ts.calibrated(test.softmax, test.logits) if len(test) else test.softmax
    ece_after = M.ece(probs_after, test.label) if len(test) else float("nan")

    rows, curves = [], {}
    for rec, csv in zip(records, method_csvs, strict=True):
        table = pd.read_csv(csv)
        by_id = table.set_index("frame_id")
        missing = np.setdiff1d(test.frame_id, by_id.index.to_numpy())
        if len(missing):
            raise ValueError(f"{csv}: {len(missing)} test frames missing")
        t = by_id.loc[test.frame_id]
        conf = t["confidence"].to_numpy(dtype=np.float64)
        trusted = t["trusted"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        name = rec["method"]
        curves[name] = (conf, test.correct)
        metrics = M.confidence_metrics(conf, test.correct, trusted, SELECTIVE_COVERAGE) if len(test) else {}
        row = {  # AUGRC is the primary column of every confidence table
            "backbone": backbone,
            "method": name,
            "augrc": metrics.pop("augrc", None),
            "threshold_rule": rec.get("threshold_rule"),
            "threshold": rec.get("threshold"),
        }
        row.update(metrics)
        oof = rec.get("train_oof_metrics") or {}
        row["oof_augrc"], row["oof_auroc"], row["oof_aurc"] = oof.get("augrc"), oof.get("auroc"), oof.get("aurc")
        row["cnn_ece_before_ts"], row["cnn_ece_after_ts"], row["temperature"] = (
            ece_before,
            ece_after,
            temperature,
        )
        reported = rec.get("test_metrics") or {}
        row.update({k: v for k, v in reported.items() if k.startswith("conformal_")})
        sizes = pd.to_numeric(t["set_size"], errors="coerce") if "set_size" in t else pd.Series(dtype=float)
        if sizes.notna().any():
            row["conformal_mean_set_size"] = float(sizes.mean())
        rows.append(row)

    out = pd.DataFrame(rows)
    with atomic_path(out_table_csv) as tmp:
        out.to_csv(tmp, index=False)
    err = float(1.0 - test.correct.mean()) if len(test) else None
    plot_risk_coverage(
        curves,
        out_risk_png,
        title=f"Risk-coverage, {backbone} (test patients)",
        error_rate=err,
        oracle=(test.correct.astype(float), test.correct) if len(test) else None,
    )
    plot_reliability(
        (test.softmax, test.label),
        (probs_after, test.label),
        out_reliability_png,
        title=f"{backbone}: CNN softmax on test patients",
        temperature=temperature,
    )
