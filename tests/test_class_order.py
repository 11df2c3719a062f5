"""Ordered scores and unordered diagnoses (`class_order`, lus_core.class_order)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from lus_core.class_order import selection_criterion, video_scores
from lus_core.config import ConfigError, load_config
from lus_core.evaluation.answer_level import video_answer
from lus_core.evaluation.nested import headline
from lus_core.evaluation.step import run_evaluate
from lus_core.videolevel.table import VIDEO_SCORES, video_metrics
from tests.test_evaluation import build_results

NOMINAL = {"class_order": "nominal", "train": {"loss": "ce"}, "video_model": {"loss": "ce"},
           "similarity": {"fallback": ["vote", "weighted"]}}


def _nominal(**changes) -> dict:
    over = json.loads(json.dumps(NOMINAL))
    for key, value in changes.items():
        section, name = key.split(".")
        over.setdefault(section, {})[name] = value
    return over


def test_a_nominal_config_refuses_what_needs_an_order_and_names_each_key():
    assert load_config("config.yaml", _nominal())["class_order"] == "nominal"
    for key, value, word in (("train.loss", "sord", "sord"), ("video_model.loss", "sord", "sord"),
                             ("similarity.fallback", ["mean", "vote"], "mean")):
        with pytest.raises(ConfigError, match=rf"key '{key}': {word} .*class_order is nominal"):
            load_config("config.yaml", _nominal(**{key: value}))
    over = _nominal()
    over["evaluate"] = {"selection": {"criterion": "qwk"}}
    with pytest.raises(ConfigError, match="evaluate.selection.criterion': qwk"):
        load_config("config.yaml", over)
    # the same settings are fine for ordered scores (the default)
    assert load_config("config.yaml", {"train": {"loss": "sord"}})["class_order"] == "ordinal"


def test_the_shipped_diagnosis_config_is_nominal():
    config = load_config("configs/pocus-diagnosis.yaml")
    assert config["class_order"] == "nominal"
    assert selection_criterion(config["evaluate"]["selection"]["criterion"], "nominal") == "balanced_accuracy"


def test_auto_criterion():
    assert selection_criterion("auto", "ordinal") == "qwk"
    assert selection_criterion("auto", "nominal") == "balanced_accuracy"
    assert selection_criterion("macro_f1", "nominal") == "macro_f1"
    assert video_scores(VIDEO_SCORES, "nominal") == ("majority", "attention")
    assert video_scores(VIDEO_SCORES, "ordinal") == VIDEO_SCORES


def test_nominal_evaluation_selects_by_balanced_accuracy_without_the_mean_of_classes(tmp_path):
    args = build_results(tmp_path, n_patients=8, frames_per_video=6, n_boot=30)
    args["config"]["class_order"] = "nominal"
    args["config"]["similarity"]["fallback"] = ["vote", "weighted"]
    matrix = run_evaluate(**args, figures=False)
    summary = json.loads(args["out_summary_json"].read_text())
    sel = summary["selected"]
    assert summary["class_order"] == "nominal" and sel["criterion"] == "balanced_accuracy"
    assert not matrix["fallback"].fillna("").eq("mean").any()
    candidates = matrix[matrix["row_type"].isin(["cnn", "combined", "fallback_only"])]
    assert sel["validation_score"] == pytest.approx(candidates["val_balanced_accuracy"].max())


def _video_table(rng, n_videos=24):
    label = rng.integers(0, 3, n_videos)
    noisy = np.where(rng.random(n_videos) < 0.6, label, rng.integers(0, 3, n_videos))
    return pd.DataFrame({
        "video": [f"v{i}" for i in range(n_videos)], "patient": [f"P{i // 2}" for i in range(n_videos)],
        "split": ["train"] * (n_videos // 2) + ["test"] * (n_videos - n_videos // 2), "label": label,
        "attention": noisy, "majority": label, "max": np.full(n_videos, 2), "mean": label,
        "confident_mean": noisy})


def test_nominal_video_scores_are_majority_and_attention_chosen_by_balanced_accuracy():
    table = _video_table(np.random.default_rng(0))
    rows = video_metrics(table, 3, 20, 0.95, 0, scores=video_scores(VIDEO_SCORES, "nominal"),
                         metrics=("accuracy", "balanced_accuracy", "qwk")).to_dict("records")
    assert [r["video_score"] for r in rows] == ["majority", "attention"]
    train = table[table.split == "train"]
    for r in rows:
        assert r["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(train.label, train[r["video_score"]]))
    # the choice follows validation balanced accuracy, whatever the validation QWK says
    rows[0]["val_qwk"], rows[1]["val_qwk"] = -1.0, 1.0
    answer = video_answer({"b": rows}, "balanced_accuracy")
    assert answer["video_score"] == "majority" and answer["metric"] == "balanced_accuracy"
    assert answer["criterion"] == "validation video balanced accuracy"
    assert answer["test"]["balanced_accuracy"]["estimate"] == rows[0]["balanced_accuracy"]


def test_the_nested_headline_of_nominal_classes_is_balanced_accuracy():
    interval = {"estimate": 0.8, "lo": 0.7, "hi": 0.9}
    estimate = {"level": "video", "class_order": "nominal", "ci": 0.95, "n_patients": 52, "n_outer_folds": 5,
                "video": {"balanced_accuracy": interval, "qwk": {"estimate": 0.1, "lo": 0, "hi": 0.2}},
                "frame": {"balanced_accuracy": interval, "accuracy": interval}}
    assert "video balanced accuracy 0.800 [0.700, 0.900]" in headline(estimate)
    assert "video QWK 0.100" in headline({**estimate, "class_order": "ordinal"})
    assert "frame balanced accuracy 0.800" in headline({**estimate, "level": "frame"})


def test_the_nested_pages_of_nominal_classes_show_no_qwk():
    from lus_core.report.nested_sections import section_nested_folds, section_nested_headline
    from lus_core.runs.nested_markdown import estimate_lines, folds_lines

    interval = {"estimate": 0.8, "lo": 0.7, "hi": 0.9}
    level = {m: interval for m in ("accuracy", "balanced_accuracy", "macro_f1", "qwk")}
    fold = {"scope": "outer0", "test_patients": ["a"], "config_id": "c", "validation_score": 0.5, "video_score": "majority",
            **level, "video_qwk": interval, "video_balanced_accuracy": interval}
    estimate = {"level": "video", "class_order": "nominal", "ci": 0.95, "n_patients": 2, "n_outer_folds": 1,
                "n_frames": 4, "n_videos": 2, "n_bootstrap": 10, "headline": "h", "video": level, "frame": level,
                "folds": [fold], "stability": {}}
    for text in ("\n".join(estimate_lines(estimate) + folds_lines(estimate)),
                 section_nested_headline(estimate, None) + section_nested_folds(estimate)):
        assert "QWK" not in text and "balanced accuracy" in text
    ordinal = {**estimate, "class_order": "ordinal"}
    assert "QWK" in "\n".join(estimate_lines(ordinal)) and "QWK" in section_nested_folds(ordinal)


def test_the_export_of_a_nominal_run_lists_and_chooses_only_unordered_video_scores():
    from types import SimpleNamespace

    from lus_core.runs.export import _video_aggregation

    rows = [{"video_score": "max", "val_qwk": 0.9, "val_balanced_accuracy": 0.9},
            {"video_score": "mean", "val_qwk": 0.8, "val_balanced_accuracy": 0.8},
            {"video_score": "majority", "val_qwk": 0.1, "val_balanced_accuracy": 0.5}]
    run = SimpleNamespace(config={"video_model": {"confident_fraction": 0.5}},
                          summary={"class_order": "nominal", "video_level": {"b": rows}})
    nominal = _video_aggregation(run, "b")
    assert nominal["chosen_on_training_patients"] == "majority" and set(nominal["methods"]) == {"majority"}
    assert "balanced accuracy" in nominal["chosen_by"]
    run.summary["class_order"] = "ordinal"
    assert _video_aggregation(run, "b")["chosen_on_training_patients"] == "max"
