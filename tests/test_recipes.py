"""Recipes compared across runs on one split: the video score and the deployed recipe are chosen
on the training patients only; the paired video-QWK difference agrees with scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from lus_core.config import validate_config
from lus_core.runs.recipes import compare_recipes, recipes_markdown, video_model_words
from lus_core.runs.run_time import record_run

SCORES = ("max", "mean", "majority", "confident_mean", "attention")


def fake_run(root, name, backbones, rng, test_patients=("T1", "T2", "T3", "T4"), val_qwk=None):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "video").mkdir()
    cfg = {"classes": [0, 1, 2, 3], "train": {"backbones": list(backbones), "weights": {"b": "imagenet", "default": "none"},
                                               "finetune": "head", "loss": "sord", "image_size": 64, "epochs": 4}}
    (run / "manifest.json").write_text(json.dumps({"config": json.dumps(cfg)}))
    (run / "split.json").write_text(json.dumps({"test_patients": list(test_patients)}))
    videos = []
    for part, patients in (("train", [f"P{i}" for i in range(6)]), ("test", list(test_patients))):
        for p in patients:
            for v in range(3):
                videos.append({"video": f"{p}_v{v}", "patient": p, "split": part, "fold": 0, "label": (hash(p) + v) % 4})
    rows, level = [], {}
    for b in backbones:
        table = pd.DataFrame(videos)
        truth = table["label"].to_numpy()
        for how in SCORES:
            noisy = np.clip(truth + rng.integers(-1, 2, len(truth)), 0, 3)
            table[how] = np.where(rng.random(len(truth)) < 0.6, truth, noisy)
        table.to_csv(run / "video" / f"{b}.csv", index=False)
        level[b] = [{"video_score": how, "val_qwk": (val_qwk or {}).get((b, how), 0.1 * i)} for i, how in enumerate(SCORES)]
        rows.append({"row_type": "cnn", "backbone": b, "val_qwk": 0.5, **{f"{m}{s}": 0.4 for m in ("accuracy", "qwk")
                                                                          for s in ("", "_lo", "_hi")}})
        bench = run / "benchmarks" / "train" / b / "0.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"s": [60.0], "cpu_time": [50.0]}).to_csv(bench, sep="\t", index=False)
    pd.DataFrame(rows).to_csv(run / "eval" / "matrix.csv", index=False)
    (run / "eval" / "summary.json").write_text(json.dumps({"video_level": level}))
    return run


def _qwk(table, how):
    test = table[table.split == "test"]
    return cohen_kappa_score(test["label"], test[how], weights="quadratic", labels=[0, 1, 2, 3])


def test_paired_difference_and_choice(tmp_path):
    rng = np.random.default_rng(0)
    a = fake_run(tmp_path, "today", ["r"], rng)  # r: attention has the best validation QWK (0.4)
    b = fake_run(tmp_path, "new", ["b"], rng, val_qwk={("b", "mean"): 0.9})
    record_run(b, started=0.0, cores=2, finished=600.0)
    table, notes = compare_recipes([a, b], n_boot=200)
    assert notes["reference"] == "r @ today" and notes["reference_video_score"] == "attention"
    row_a, row_b = table.iloc[0], table.iloc[1]
    assert row_b["video_score"] == "mean" and notes["chosen"] == "b @ new" and table["chosen"].tolist() == [False, True]
    ta, tb = (pd.read_csv(r / "video" / f"{n}.csv") for r, n in ((a, "r"), (b, "b")))
    assert row_a["video_qwk"] == pytest.approx(_qwk(ta, "attention"))
    assert row_b["delta_video_qwk"] == pytest.approx(_qwk(tb, "mean") - _qwk(ta, "attention"))
    assert row_a["delta_video_qwk"] == 0.0 and row_b["delta_video_qwk_lo"] <= row_b["delta_video_qwk_hi"]
    assert row_b["run_wall_minutes"] == pytest.approx(10.0) and pd.isna(row_a["run_wall_minutes"])
    assert "frozen encoder" in row_b["description"] and "SORD" in row_b["description"]
    text = recipes_markdown(table, notes)
    assert "b @ new (chosen)" in text and "10.0 min" in text
    # a pair asked for by name: the same paired bootstrap as the Δ column, either way round
    _, paired = compare_recipes([a, b], n_boot=200, pairs=[("b @ new", "r @ today"), ("r @ today", "b @ new")])
    there, back = paired["pairs"]
    assert there["diff"] == pytest.approx(row_b["delta_video_qwk"]) and back["diff"] == pytest.approx(-there["diff"])
    assert (there["lo"], there["hi"]) == pytest.approx((row_b["delta_video_qwk_lo"], row_b["delta_video_qwk_hi"]))
    assert "- b @ new − r @ today: " in recipes_markdown(table, paired)
    with pytest.raises(ValueError, match="'x @ y' is none of"):
        compare_recipes([a, b], pairs=[("x @ y", "r @ today")])


def test_test_patients_cannot_change_the_choice(tmp_path):
    rng = np.random.default_rng(1)
    a = fake_run(tmp_path, "today", ["r"], rng)
    b = fake_run(tmp_path, "new", ["b"], rng, val_qwk={("b", "mean"): 0.9})
    _, before = compare_recipes([a, b], n_boot=50)
    path = b / "video" / "b.csv"
    t = pd.read_csv(path)
    for how in SCORES:  # every test video scored at the far end of the scale
        t.loc[t.split == "test", how] = 3 - t.loc[t.split == "test", "label"]
    t.to_csv(path, index=False)
    table, after = compare_recipes([a, b], n_boot=50)
    assert after["chosen"] == before["chosen"] == "b @ new" and table.iloc[1]["video_qwk"] < 0


def test_runs_on_different_splits_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    a = fake_run(tmp_path, "a", ["r"], rng)
    b = fake_run(tmp_path, "b", ["s"], rng, test_patients=("T1", "T2", "T3", "T9"))
    with pytest.raises(ValueError, match="different test patients"):
        compare_recipes([a, b])


def test_a_recipe_names_what_its_video_score_changes():
    default = validate_config({"dataset": {"synthetic": {"enabled": True}}})["video_model"]
    assert video_model_words(default) == ""
    changed = {**default, "input": "embedding", "dropout": 0.3, "early_stopping": True, "motion": True}
    assert video_model_words(changed) == ("video score on the frames' embeddings, with their motion, dropout 0.3, "
                                          "early stopping on inner folds")
    assert video_model_words({**default, "enabled": False}) == "no learned video score"
