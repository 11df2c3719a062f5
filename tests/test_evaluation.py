"""The all-configurations matrix: completeness, the bounds the oracle rows must respect, the
bookkeeping identities, and summary.json.  Inputs are small fixture files written exactly to
the contracts of docs/architecture.md."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lus_core import metrics as M
from lus_core.cnn.predictions import Predictions, read_predictions, write_predictions
from lus_core.confidence import failure_metrics as CM
from lus_core.config import validate_config
from lus_core.evaluation.matrix import DEPLOYABLE, TestSet, evaluate_matrix
from lus_core.evaluation.selection import select_configuration
from lus_core.evaluation.step import inputs_from_keys, run_evaluate
from lus_core.evaluation.summary import CONFIDENCE_COLUMNS
from lus_core.similarity.fallback import fallback_scores
from lus_core.workflow.step_config import step_config

CLASSES = [0, 1, 2, 3]
BACKBONES = ["scratch", "resnet18"]
METHODS = ["msp", "entropy"]
SPACES = ["softmax", "raw"]
KS = [3, 5]
MODES = ["mean", "vote", "weighted"]
K_MAX = 5


def _str(a):
    return np.asarray(a, dtype=object).astype(str).astype(h5py.string_dtype())


def build_results(root: Path, n_patients: int = 10, videos_per_patient: int = 2, frames_per_video: int = 12,
                  seed: int = 0, n_boot: int = 200) -> dict:
    """Write a complete small results folder (frames, index, split, predictions, confidence,
    neighbours) following docs/architecture.md; return run_evaluate's arguments."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    c = len(CLASSES)
    patients = [f"P{i:02d}" for i in range(n_patients)]
    test_patients = sorted(patients[::3])[:4]
    train_patients = sorted(set(patients) - set(test_patients))

    # frame store + index
    rows = []
    (root / "frames").mkdir(parents=True, exist_ok=True)
    fid = 0
    for p in patients:
        for v in range(videos_per_patient):
            vid = f"{p}_v{v}"
            base = int(rng.integers(0, c))
            lab = np.clip(base + rng.choice([-1, 0, 0, 0, 1], frames_per_video), 0, c - 1).astype(np.int16)
            img = (lab[:, None, None, None] * 60 + rng.integers(0, 40, (frames_per_video, 16, 16, 1))).astype(np.uint8)
            path = root / "frames" / f"{vid}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("frames", data=img, chunks=(1, 16, 16, 1), compression="gzip")
                f["label"] = lab
                f["frame_index"] = np.arange(frames_per_video, dtype=np.int32)
                f["patient"] = _str([p] * frames_per_video)
                f["video"] = _str([vid] * frames_per_video)
            for r in range(frames_per_video):
                rows.append({"frame_id": fid, "video": vid, "patient": p, "frame": r, "label": int(lab[r]),
                             "h5": str(path), "row": r})
                fid += 1
    fi = pd.DataFrame(rows)
    fi.to_csv(root / "frame_index.csv", index=False)
    n = len(fi)
    y = fi["label"].to_numpy()
    pats = fi["patient"].to_numpy()
    is_test = np.isin(pats, test_patients)
    split = {
        "test_patients": test_patients, "train_patients": train_patients,
        "folds": [{"fold": 0, "val_patients": train_patients[:3], "train_patients": train_patients[3:]}],
        "objective": "std", "objective_value": 0.1,
        "test_counts": np.bincount(y[is_test], minlength=c).tolist(),
        "train_counts": np.bincount(y[~is_test], minlength=c).tolist(),
        "n_combinations": 210, "method": "exhaustive", "seconds": 0.1, "k": 4, "seed": seed, "config": "{}",
    }
    (root / "split.json").write_text(json.dumps(split))

    raw = np.stack([
        h5py.File(root / "frames" / f"{v}.h5", "r")["frames"][r].astype(float).ravel()
        for v, r in zip(fi["video"], fi["row"], strict=True)
    ])
    predictions, confidence, neighbors = {}, {}, {}
    for bi, b in enumerate(BACKBONES):
        logits = rng.normal(0, 1.0, (n, c))
        logits[np.arange(n), y] += 1.2 + 0.6 * bi
        sm = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        emb = np.hstack([sm, rng.normal(0, 0.1, (n, 4))]).astype(np.float32)
        (root / "predictions").mkdir(exist_ok=True)
        write_predictions(root / "predictions" / f"{b}.h5", Predictions(
            frame_id=np.arange(n, dtype=np.int64), label=y, patient=pats, video=fi["video"].to_numpy(),
            split=np.where(is_test, "test", "train"), fold=np.where(is_test, -1, 0), logits=logits, softmax=sm,
            embedding_oof=emb, embedding_all=emb,
            attrs={"backbone": b, "classes": json.dumps(CLASSES), "config": "{}"}))
        predictions[b] = root / "predictions" / f"{b}.h5"

        srt = np.sort(sm, axis=1)
        scores = {"msp": srt[:, -1], "entropy": srt[:, -1] - srt[:, -2]}
        cdir = root / "confidence" / b
        cdir.mkdir(parents=True, exist_ok=True)
        for m in METHODS:
            conf = scores[m] / scores[m].max()
            thr = float(np.quantile(conf[~is_test], 0.3))
            df = pd.DataFrame({"frame_id": np.arange(n), "split": np.where(is_test, "test", "train"),
                               "confidence": conf, "trusted": conf >= thr, "set_size": np.nan})
            df = df.sample(frac=1.0, random_state=1)  # row order must not matter
            df.to_csv(cdir / f"{m}.csv", index=False)
            (cdir / f"{m}.json").write_text(json.dumps(
                {"threshold": thr, "method": m, "test_metrics": {"auroc": 0.7, "ece": 0.05}}))
            confidence[(b, m)] = (cdir / f"{m}.csv", cdir / f"{m}.json")

        ndir = root / "neighbors" / b
        ndir.mkdir(parents=True, exist_ok=True)
        train_idx = np.flatnonzero(~is_test)
        for s in SPACES:
            feats = sm if s == "softmax" else raw
            d = np.linalg.norm(feats[:, None, :] - feats[None, train_idx, :], axis=2)
            d[pats[:, None] == pats[None, train_idx]] = np.inf  # other patients only
            order = np.argsort(d, axis=1)[:, :K_MAX]
            nb = train_idx[order]
            with h5py.File(ndir / f"{s}.h5", "w") as f:
                f["frame_id"] = np.arange(n, dtype=np.int64)
                f["neighbor_frame_id"] = nb.astype(np.int64)
                f["neighbor_label"] = y[nb].astype(np.int16)
                f["distance"] = np.take_along_axis(d, order, axis=1).astype(np.float32)
            neighbors[(b, s)] = ndir / f"{s}.h5"

    config = {
        "results": str(root), "seed": seed, "classes": CLASSES,
        "dataset": {"synthetic": {"enabled": True}},
        "train": {"backbones": BACKBONES, "weights": "none", "finetune": "head", "epochs": 1},
        "confidence": {"methods": METHODS, "threshold_rule": "balanced_accuracy"},
        "similarity": {"spaces": SPACES, "k": KS, "fallback": MODES, "raw_size": 8},
        "evaluate": {"n_bootstrap": n_boot, "ci": 0.95, "n_gallery": 2, "tsne_max_points": 60},
    }
    config = validate_config(config)
    (root / "run_config.json").write_text(json.dumps(config))  # the whole config: see report_config
    config = step_config(config, "evaluate")  # what the workflow's step receives
    return {
        "predictions": predictions, "confidence": confidence, "neighbors": neighbors,
        "split_json": root / "split.json", "frame_index_csv": root / "frame_index.csv",
        "out_matrix_csv": root / "eval" / "matrix.csv", "out_summary_json": root / "eval" / "summary.json",
        "out_dir_figures": root / "eval" / "figures", "config": config,
    }


def report_config(args: dict) -> dict:
    """The `report` step's config of a build_results run."""
    return step_config(json.loads((Path(args["split_json"]).parent / "run_config.json").read_text()), "report")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    args = build_results(tmp_path_factory.mktemp("results"))
    matrix = run_evaluate(**args, figures=False)
    return args, matrix


def test_matrix_has_every_configuration(evaluated):
    args, matrix = evaluated
    per_backbone = 1 + 2 * len(SPACES) * len(KS) * len(MODES) + len(METHODS) * (
        len(SPACES) * len(KS) * len(MODES) + 1)
    assert len(matrix) == len(BACKBONES) * per_backbone
    comb = matrix[matrix["row_type"] == "combined"]
    got = set(zip(comb["backbone"], comb["confidence"], comb["space"], comb["k"].astype(int), comb["fallback"],
                  strict=True))
    assert got == set(itertools.product(BACKBONES, METHODS, SPACES, KS, MODES))
    assert len(got) == len(comb)
    counts = matrix["row_type"].value_counts().to_dict()
    assert counts == {"cnn": 2, "combined": 48, "fallback_only": 24, "oracle_detector": 24, "oracle_fallback": 4}
    # the csv on disk is the same table, config columns first
    disk = pd.read_csv(args["out_matrix_csv"])
    assert len(disk) == len(matrix)
    assert list(disk.columns[:8]) == ["rank", "config_id", "row_type", "backbone", "confidence", "space", "k",
                                      "fallback"]
    for col in ["accuracy_lo", "accuracy_hi", "qwk", "delta_accuracy_significant", "delta_macro_f1_p",
                "recall_0", "recall_3", "frames_fixed", "frames_broken", "cnn_acc_rejected",
                "fallback_acc_rejected", "video_max_accuracy", "video_mean_qwk", "video_majority_macro_f1",
                "confusion_matrix", "fallback_rate"]:
        assert col in disk.columns, col


def test_sorted_best_first(evaluated):
    _, matrix = evaluated
    acc = matrix["accuracy"].to_numpy()
    assert np.all(np.diff(acc) <= 1e-12)
    assert matrix["rank"].tolist() == list(range(1, len(matrix) + 1))


def test_scored_on_test_patients_only(evaluated):
    args, matrix = evaluated
    fi = pd.read_csv(args["frame_index_csv"])
    split = json.loads(Path(args["split_json"]).read_text())
    n_test = int(fi["patient"].isin(split["test_patients"]).sum())
    assert (matrix["n_frames"] == n_test).all()
    assert (matrix["n_patients"] == len(split["test_patients"])).all()
    cm = np.array(json.loads(matrix.loc[0, "confusion_matrix"]))
    assert cm.sum() == n_test


def test_oracle_rows_bound_the_others(evaluated):
    _, matrix = evaluated
    for b in BACKBONES:
        rows = matrix[matrix["backbone"] == b]
        cnn_acc = rows.loc[rows["row_type"] == "cnn", "accuracy"].item()
        od = rows[rows["row_type"] == "oracle_detector"]
        # trusting exactly the right frames: the fallback only ever sees wrong CNN scores
        assert (od["accuracy"] >= cnn_acc - 1e-12).all()
        assert (od["frames_broken"] == 0).all()
        assert (od["cnn_acc_rejected"].fillna(0) == 0).all()
        for m in METHODS:
            of = rows[(rows["row_type"] == "oracle_fallback") & (rows["confidence"] == m)]
            comb = rows[(rows["row_type"] == "combined") & (rows["confidence"] == m)]
            assert len(of) == 1 and len(comb) == len(SPACES) * len(KS) * len(MODES)
            assert (comb["accuracy"] <= of["accuracy"].item() + 1e-12).all()
            assert of["frames_broken"].item() == 0
        # the oracle detector with a given fallback bounds every detector with that fallback
        comb = rows[rows["row_type"] == "combined"]
        for _, r in comb.iterrows():
            o = od[(od["space"] == r["space"]) & (od["k"] == r["k"]) & (od["fallback"] == r["fallback"])]
            assert r["accuracy"] <= o["accuracy"].item() + 1e-12


def test_bookkeeping_identities(evaluated):
    _, matrix = evaluated
    for b in BACKBONES:
        rows = matrix[matrix["backbone"] == b]
        cnn = rows[rows["row_type"] == "cnn"].iloc[0]
        assert cnn["delta_accuracy"] == 0 and not cnn["delta_accuracy_significant"]
        assert cnn["fallback_rate"] == 0 and cnn["n_fallback"] == 0
        n = cnn["n_frames"]
        for _, r in rows.iterrows():
            # final accuracy = CNN accuracy + (fixed - broken) / n
            assert r["accuracy"] == pytest.approx(cnn["accuracy"] + (r["frames_fixed"] - r["frames_broken"]) / n)
            assert r["delta_accuracy"] == pytest.approx(r["accuracy"] - cnn["accuracy"])
            assert r["delta_accuracy_lo"] <= r["delta_accuracy_hi"]
            assert r["accuracy_lo"] <= r["accuracy_hi"]
            if r["delta_accuracy_significant"]:
                assert r["delta_accuracy_lo"] > 0 or r["delta_accuracy_hi"] < 0
        fo = rows[rows["row_type"] == "fallback_only"]
        assert (fo["fallback_rate"] == 1.0).all()


def test_fallback_rate_matches_confidence_file(evaluated):
    args, matrix = evaluated
    split = json.loads(Path(args["split_json"]).read_text())
    pats = pd.read_csv(args["frame_index_csv"]).set_index("frame_id")["patient"]
    for (b, m), (csv, _) in args["confidence"].items():
        df = pd.read_csv(csv)
        test = df[df["frame_id"].map(pats).isin(split["test_patients"])]
        rate = 1 - test["trusted"].mean()
        rows = matrix[(matrix["backbone"] == b) & (matrix["confidence"] == m)
                      & matrix["row_type"].isin(["combined", "oracle_fallback"])]
        assert np.allclose(rows["fallback_rate"], rate)


def test_summary(evaluated):
    args, matrix = evaluated
    s = json.loads(Path(args["out_summary_json"]).read_text())
    best = matrix[matrix["row_type"] == "combined"].iloc[0]
    assert s["best"]["config_id"] == best["config_id"]
    assert s["best"]["delta_accuracy"] == pytest.approx(best["delta_accuracy"])
    assert isinstance(s["best"]["delta_accuracy_significant"], bool)
    assert s["significance"]["n_configurations"] == 48
    assert "CNN alone" in s["significance"]["statement"]
    assert s["counts"]["rows"] == len(matrix)
    assert s["counts"]["n_test_patients"] == 4
    assert set(s["cnn_alone"]) == set(BACKBONES)
    assert len(s["confidence_methods"]) == len(BACKBONES) * len(METHODS)
    # one value per (method, metric): what the table computes is not repeated from the step's JSON
    assert s["confidence_methods"][0]["reported"] == {"ece": 0.05}
    assert s["config"]["seed"] == 0
    assert "NaN" not in Path(args["out_summary_json"]).read_text()  # strict JSON


def test_reproducible(evaluated, tmp_path):
    args, matrix = evaluated
    args2 = {**args, "out_matrix_csv": tmp_path / "m.csv", "out_summary_json": tmp_path / "s.json",
             "out_dir_figures": tmp_path}
    again = run_evaluate(**args2, figures=False)
    pd.testing.assert_frame_equal(matrix, again)


def test_bootstrap_agrees_with_metrics_module(evaluated):
    """The matrix's vectorised CIs are the same as metrics.bootstrap_ci on the same data."""
    args, matrix = evaluated
    p = read_predictions(args["predictions"]["scratch"])
    t = p.split == "test"
    cfg = args["config"]
    r = M.bootstrap_ci(M.accuracy, p.label[t], p.pred[t], p.patient[t], n_boot=cfg["evaluate"]["n_bootstrap"],
                       ci=0.95, seed=cfg["seed"], n_classes=4)
    row = matrix[(matrix["row_type"] == "cnn") & (matrix["backbone"] == "scratch")].iloc[0]
    assert row["accuracy"] == pytest.approx(r.estimate)
    assert row["accuracy_lo"] == pytest.approx(r.lo)
    assert row["accuracy_hi"] == pytest.approx(r.hi)


def test_rejects_test_patient_leak(tmp_path):
    args = build_results(tmp_path, n_patients=6, frames_per_video=4)
    path = args["predictions"]["scratch"]
    with h5py.File(path, "r+") as f:
        split = f["split"].asstr()[()]
        pats = f["patient"].asstr()[()]
        test_p = json.loads(Path(args["split_json"]).read_text())["test_patients"][0]
        idx = np.flatnonzero(pats == test_p)[0]
        split[idx] = "train"
        del f["split"]
        f["split"] = _str(split)
    with pytest.raises(ValueError, match="marked 'train'"):
        run_evaluate(**args, figures=False)


def test_fallback_modes_of_the_shared_function():
    """The evaluation scores fallbacks with lus_core.similarity.fallback (no local copy)."""
    lab = np.array([[0, 1, 3], [2, 2, 0], [1, 2, 0], [0, 3, 3]])
    dist = np.array([[0.1, 1, 1], [1, 1, 0.01], [1, 1, 1], [0.001, 1, 1]])
    assert fallback_scores(lab, dist, 4, "mean").tolist() == [1, 1, 1, 2]  # 1.33, 1.33, 1.0, 2.0
    assert fallback_scores(lab, dist, 4, "vote").tolist() == [0, 2, 0, 3]  # ties -> lower class
    assert fallback_scores(lab, dist, 4, "weighted").tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        fallback_scores(lab, dist, 4, "median")
    lab = np.array([[1, -1, -1], [-1, -1, -1], [2, 3, 3]])
    dist = np.array([[0.5, np.inf, np.inf], [np.nan, np.nan, np.nan], [0.1, 1.0, 1.0]])
    for mode in MODES:
        out = fallback_scores(lab, dist, 4, mode)
        assert out[0] == 1 and out[1] == -1


def test_figures_and_gallery(tmp_path):
    args = build_results(tmp_path, n_patients=6, frames_per_video=6, n_boot=50)
    run_evaluate(**args, figures=True)
    s = json.loads(Path(args["out_summary_json"]).read_text())
    files = {Path(f["file"]).name for f in s["figures"]}
    assert {"confusion_cnn_scratch.png", "confusion_selected.png", "forest_accuracy.png", "risk_coverage_scratch.png",
            "tsne_resnet18.png"} <= files
    assert len(s["galleries"]) == 2
    for f in s["figures"] + s["galleries"]:
        png = Path(args["out_summary_json"]).parent / f["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_neighbours_keep_the_cnn_score():
    n = 8
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    counts = M.patient_resample_counts(2, 20, 0)
    ts = TestSet(np.arange(n), y, np.repeat(["a", "b"], 4), np.repeat(["va", "vb"], 4), 4, counts, 0.95)
    sm = np.eye(4)[[0, 1, 2, 2, 0, 1, 2, 2]]  # CNN wrong on frames 3 and 7
    preds = {"b": sm.argmax(axis=1)}
    conf = {("b", "m"): (np.zeros(n), np.zeros(n, bool))}  # nothing trusted
    nlab = np.full((n, 2), -1)
    nlab[3] = 3  # only frame 3 has neighbours, and they fix it
    dist = np.where(nlab >= 0, 1.0, np.inf)
    df = evaluate_matrix(preds, conf, {("b", "s", "none"): (nlab, dist)}, ts, [2], ["vote"], ["0", "1", "2", "3"])
    comb = df[df["row_type"] == "combined"].iloc[0]
    assert comb["frames_fixed"] == 1 and comb["frames_broken"] == 0
    assert comb["accuracy"] == pytest.approx(7 / 8)


# --------------------------------------------------------------------------- selection on training patients


def _rewrite_predictions(path, change):
    p = read_predictions(path)
    change(p)
    write_predictions(path, p)


def _summary(args):
    return json.loads(Path(args["out_summary_json"]).read_text())


def test_selected_configuration_is_recorded(evaluated):
    args, matrix = evaluated
    s = _summary(args)
    sel = s["selected"]
    dep = matrix[matrix["row_type"].isin(DEPLOYABLE)]
    assert matrix["selected"].sum() == 1 and matrix.loc[matrix["selected"], "config_id"].item() == sel["config_id"]
    assert sel["criterion"] == "qwk" and "training patients" in sel["chosen_on"]
    assert sel["validation_score"] == pytest.approx(dep["val_qwk"].max())
    assert matrix.loc[~matrix["row_type"].isin(DEPLOYABLE), "val_qwk"].isna().all()
    row = matrix[matrix["selected"]].iloc[0]
    assert sel["test"]["qwk"]["estimate"] == pytest.approx(row["qwk"])
    assert sel["test"]["qwk"]["lo"] <= row["qwk"] <= sel["test"]["qwk"]["hi"]
    assert sel["delta_vs_cnn"]["qwk"]["diff"] == pytest.approx(row["delta_qwk"])
    wc = s["winners_curse"]
    assert wc["test_best_score"] == pytest.approx(dep["qwk"].max())
    assert wc["gap"] == pytest.approx(dep["qwk"].max() - row["qwk"]) and wc["gap"] >= 0


def test_test_patients_cannot_change_the_selection(tmp_path):
    """Shuffled test labels, random test softmax, random test confidence and trust: the test
    scores change, the selected configuration and every validation score do not."""
    args = build_results(tmp_path / "a", n_patients=8, frames_per_video=6, n_boot=50)
    before = run_evaluate(**args, figures=False)
    rng = np.random.default_rng(7)
    test_p = json.loads(Path(args["split_json"]).read_text())["test_patients"]
    first = read_predictions(args["predictions"]["scratch"])
    is_test = np.isin(first.patient, test_p)
    new_labels = first.label.copy()
    new_labels[is_test] = rng.permutation(new_labels[is_test])

    def scramble(p):
        p.label[is_test] = new_labels[is_test]
        p.softmax[is_test] = rng.dirichlet(np.ones(p.softmax.shape[1]), int(is_test.sum()))

    for path in args["predictions"].values():
        _rewrite_predictions(path, scramble)
    for csv, _ in args["confidence"].values():
        t = pd.read_csv(csv)
        te = t["split"] == "test"
        t.loc[te, "confidence"] = rng.random(int(te.sum()))
        t.loc[te, "trusted"] = rng.random(int(te.sum())) < 0.5
        t.to_csv(csv, index=False)
    after = run_evaluate(**args, figures=False)
    key = ["config_id"]
    a, b = before.sort_values(key).reset_index(drop=True), after.sort_values(key).reset_index(drop=True)
    assert not np.allclose(a["accuracy"], b["accuracy"])  # the test scores did change
    val_cols = [c for c in a.columns if c.startswith("val_")]
    pd.testing.assert_frame_equal(a[key + val_cols], b[key + val_cols])
    assert before.loc[before["selected"], "config_id"].item() == after.loc[after["selected"], "config_id"].item()


def test_training_patients_do_change_the_selection(tmp_path):
    """A CNN that is perfect out of fold on the training patients is selected (and the tie with
    combined configurations that also score 1 goes to the one with fewer moving parts)."""
    args = build_results(tmp_path / "a", n_patients=8, frames_per_video=6, n_boot=50)
    before = run_evaluate(**args, figures=False)
    assert before.loc[before["selected"], "config_id"].item() != "resnet18 · CNN alone"

    def perfect_on_train(p):
        tr = p.split == "train"
        p.softmax[tr] = np.eye(p.softmax.shape[1])[p.label[tr]] * 0.9 + 0.025

    _rewrite_predictions(args["predictions"]["resnet18"], perfect_on_train)
    after = run_evaluate(**args, figures=False)
    assert after.loc[after["selected"], "config_id"].item() == "resnet18 · CNN alone"
    assert _summary(args)["selected"]["validation_score"] == pytest.approx(1.0)


def test_criterion_comes_from_the_config(tmp_path):
    args = build_results(tmp_path / "a", n_patients=8, frames_per_video=6, n_boot=50)
    args["config"]["evaluate"]["selection"]["criterion"] = "accuracy"
    m = run_evaluate(**args, figures=False)
    dep = m[m["row_type"].isin(DEPLOYABLE)]
    sel = _summary(args)["selected"]
    assert sel["criterion"] == "accuracy" and sel["validation_score"] == pytest.approx(dep["val_accuracy"].max())
    args["config"]["evaluate"]["selection"]["criterion"] = "auroc"
    with pytest.raises(Exception, match="criterion"):
        run_evaluate(**args, figures=False)


def test_tie_break_prefers_fewer_moving_parts_then_lower_fallback_rate():
    val = pd.DataFrame({
        "config_id": ["z · combined", "a · combined", "m · fallback only", "q · CNN alone", "b · combined"],
        "row_type": ["combined", "combined", "fallback_only", "cnn", "combined"],
        "val_qwk": [0.8, 0.8, 0.8, 0.7, 0.8],
        "val_fallback_rate": [0.1, 0.3, 1.0, 0.0, 0.1],
    })
    assert select_configuration(val, "qwk")["config_id"] == "m · fallback only"
    assert select_configuration(val.drop(index=2), "qwk")["config_id"] == "b · combined"  # rate, then name
    val.loc[3, "val_qwk"] = 0.8
    assert select_configuration(val, "qwk")["config_id"] == "q · CNN alone"
    val["val_qwk"] = np.nan  # nothing scorable: still deterministic
    assert select_configuration(val, "qwk")["config_id"] == "q · CNN alone"


def test_neighbours_from_test_frames_are_rejected(tmp_path):
    args = build_results(tmp_path, n_patients=6, frames_per_video=4, n_boot=20)
    path = args["neighbors"][("scratch", "softmax")]
    test_p = json.loads(Path(args["split_json"]).read_text())["test_patients"]
    fi = pd.read_csv(args["frame_index_csv"])
    test_frame = int(fi.loc[fi["patient"].isin(test_p), "frame_id"].iloc[0])
    with h5py.File(path, "r+") as f:
        nid = f["neighbor_frame_id"][()]
        nid[-1, 0] = test_frame
        f["neighbor_frame_id"][...] = nid
    with pytest.raises(ValueError, match="not training frames"):
        run_evaluate(**args, figures=False)


def test_confidence_table_has_one_value_per_metric_from_the_shared_implementation(evaluated):
    args, _ = evaluated
    s = _summary(args)
    p = read_predictions(args["predictions"]["scratch"])
    t = np.sort(np.flatnonzero(p.split == "test"))
    conf = pd.read_csv(args["confidence"][("scratch", "msp")][0]).set_index("frame_id").loc[p.frame_id[t]]
    row = next(r for r in s["confidence_methods"] if r["backbone"] == "scratch" and r["method"] == "msp")
    correct = p.pred[t] == p.label[t]
    assert row["augrc"] == pytest.approx(CM.augrc(conf["confidence"].to_numpy(), correct))
    assert row["aurc"] == pytest.approx(CM.aurc(conf["confidence"].to_numpy(), correct))
    assert list(CONFIDENCE_COLUMNS)[0] == "augrc"


def test_named_inputs_are_matched_by_name_not_position():
    keys = {"predictions": {"scratch": "predictions_scratch"},
            "confidence": [["scratch", "svc_per_class", "scores_scratch_svc_per_class", "summary_scratch_svc_per_class"]],
            "neighbors": [["scratch", "raw", "neighbors_scratch_raw"]]}
    named = {"neighbors_scratch_raw": "n.h5", "summary_scratch_svc_per_class": "s.json", "split": "split.json",
             "scores_scratch_svc_per_class": "c.csv", "predictions_scratch": "p.h5"}
    p, c, n = inputs_from_keys(json.dumps(keys), named)
    assert p == {"scratch": "p.h5"} and c == {("scratch", "svc_per_class"): ("c.csv", "s.json")}
    assert n == {("scratch", "raw"): "n.h5"}
    with pytest.raises(KeyError, match="not in input_keys"):
        inputs_from_keys(keys, {**named, "neighbors_scratch_tsne": "t.h5"})
    with pytest.raises(KeyError, match="does not have"):
        inputs_from_keys(keys, {k: v for k, v in named.items() if k != "scores_scratch_svc_per_class"})


def test_configurations_validated_through_a_learned_all_model_embedding_are_not_candidates():
    from lus_core.evaluation.selection import in_sample

    val = pd.DataFrame({
        "config_id": ["b · combined embedding", "b · CNN alone"],
        "row_type": ["combined", "cnn"],
        "val_qwk": [0.9, 0.5],
        "val_fallback_rate": [0.2, 0.0],
        "val_out_of_fold": [False, True],
    })
    # the in-sample row has the higher validation score, and still is not chosen
    assert select_configuration(val, "qwk")["config_id"] == "b · CNN alone"
    with pytest.raises(ValueError, match="out-of-fold"):
        select_configuration(val.iloc[:1], "qwk")
    learned, frozen = {"b": True}, {"b": False}
    for meta, expected in (({"backbone": "b", "space": "embedding"}, True), ({"backbone": "b", "space": "tsne"}, True),
                           ({"backbone": "b", "confidence": "trust_score"}, True), ({"backbone": "b", "space": "raw"}, False),
                           ({"backbone": "b", "space": "softmax", "confidence": "msp"}, False)):
        assert in_sample(meta, learned) is expected
        assert in_sample(meta, frozen) is False  # a frozen encoder's embedding never saw a label
