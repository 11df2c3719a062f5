"""The ``confidence_report`` step: every confidence method of one backbone side by side on the test
patients (``confidence/{backbone}/metrics.csv``), their risk-coverage curves and the CNN's
reliability before / after temperature scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lus_core.cnn.predictions import Predictions, read_predictions
from lus_core.confidence import failure_metrics as M
from lus_core.confidence.baselines import TemperatureScaling
from lus_core.confidence.plots import plot_reliability, plot_risk_coverage
from lus_core.confidence.scores_file import read_scores
from lus_core.confidence.step import SELECTIVE_COVERAGE, fit_rows
from lus_core.io_utils import atomic_path, read_json


def _temperature_for_report(method_records: list[dict], train: Predictions, config: dict) -> float:
    for rec in method_records:
        t = (rec.get("fitted") or {}).get("temperature") if rec.get("method") == "temperature" else None
        if t:
            return float(t)
    return fit_rows("temperature", config, train).temperature_ if len(train) else 1.0


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

    if len(method_jsons) != len(method_csvs):
        raise ValueError("one JSON per CSV")
    pred = read_predictions(predictions_h5)
    is_test = pred.split == "test"
    test, train = pred.subset(is_test), pred.subset(pred.split == "train")
    backbone = pred.attrs.get("backbone", "")
    records = [read_json(p) for p in method_jsons]
    temperature = _temperature_for_report(records, train, config)
    ts = TemperatureScaling(seed=int(config["seed"]))
    ts.temperature_ = temperature
    ece_before = M.ece(test.softmax, test.label) if len(test) else float("nan")
    probs_after = ts.calibrated(test.softmax, test.logits) if len(test) else test.softmax
    ece_after = M.ece(probs_after, test.label) if len(test) else float("nan")

    rows, curves = [], {}
    for rec, csv in zip(records, method_csvs, strict=True):
        by_id = read_scores(csv).set_index("frame_id")
        missing = np.setdiff1d(test.frame_id, by_id.index.to_numpy())
        if len(missing):
            raise ValueError(f"{csv}: {len(missing)} test frames missing")
        t = by_id.loc[test.frame_id]
        conf = t["confidence"].to_numpy(dtype=np.float64)
        trusted = t["trusted"].to_numpy()
        name = rec["method"]
        curves[name] = (conf, test.correct, trusted)
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
        sizes = t["set_size"]
        if sizes.notna().any():
            row["conformal_mean_set_size"] = float(sizes.mean())
        rows.append(row)

    out = pd.DataFrame(rows)
    with atomic_path(out_table_csv) as tmp:
        out.to_csv(tmp, index=False)
    plot_risk_coverage(curves, out_risk_png, title=f"Risk-coverage, {backbone} (test patients)")
    plot_reliability(
        (test.softmax, test.label),
        (probs_after, test.label),
        out_reliability_png,
        title=f"{backbone}: CNN softmax on test patients",
        temperature=temperature,
    )
