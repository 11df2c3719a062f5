"""Model seeds (train.seeds): one replica of every scope per seed, choices on the mean over the
seeds, and the nested estimate pooled over the seeds with each seed's own estimate beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score

from lus_core.evaluation.nested import load_outer_folds, nested_estimate, seed_table
from lus_core.evaluation.seeds import mean_over_seeds, read_validation, video_level_mean, write_validation
from lus_core.evaluation.selected_scores import write_selected_scores
from lus_core.evaluation.selection import select_configuration
from lus_core.runs.layout import RunLayout
from lus_core.split.scopes import (
    model_seed,
    model_seeds,
    replicas,
    seed_overrides,
    split_scope,
    training_scopes,
)
from lus_core.workflow.step_config import step_of_rule, step_params
from tests.test_nested import _fold


def _config(seeds, outer_folds=1, seed=42):
    return {"seed": seed, "split": {"outer_folds": outer_folds}, "train": {"seeds": seeds}}


def test_every_scope_has_one_replica_per_seed_the_first_being_the_scope_itself():
    assert training_scopes(_config([])) == [("", 42)]
    assert training_scopes(_config([42])) == [("", 42)]
    assert training_scopes(_config([5, 6], outer_folds=2)) == [
        ("", 5), ("seed1", 6), ("outer0", 5), ("outer0_seed1", 6), ("outer1", 5), ("outer1_seed1", 6)]
    assert replicas(_config([1, 2, 3]), "outer4") == ["outer4", "outer4_seed1", "outer4_seed2"]
    assert model_seeds(_config([])) == [42]
    for scope, parts in {"": ("", 0), "seed2": ("", 2), "outer3": ("outer3", 0), "outer3_seed1": ("outer3", 1)}.items():
        assert split_scope(scope) == parts
    for bad in ("outer3seed1", "seed0", "outer1_seed0", "_seed1", "x"):
        with pytest.raises(ValueError, match="is not a scope"):
            split_scope(bad)
    layout = RunLayout("results/x")
    assert layout.scoped("seed2").model("b", "all") == "results/x/seed/2/models/b/all.pt"
    assert layout.scoped("outer3_seed1").summary() == "results/x/outer/3/seed/1/eval/summary.json"
    assert layout.scoped("outer3").validation() == "results/x/outer/3/eval/validation.json"
    assert step_of_rule("train_outer2_seed1") == "train" and step_of_rule("evaluate_seed3") == "evaluate"
    assert step_of_rule("extract_frames_3") == "extract_frames"


def test_a_replica_changes_only_the_seed_its_steps_draw_from():
    config = _config([42, 7])
    # the run's own seed: today's slices, so a run with one seed (or seeds [its seed]) reruns nothing
    assert all(seed_overrides(config, step, 42) == {} for step in ("train", "fit_confidence", "evaluate"))
    # train keeps `seed` (the frozen encoder's cached views are drawn from it) and gets model_seed
    assert seed_overrides(config, "train", 7) == {"model_seed": 7}
    assert seed_overrides(config, "fit_confidence", 7) == {"seed": 7}
    assert seed_overrides(config, "fit_video_model", 7) == {"seed": 7}
    # inference, the embedding cache and the evaluation's resamples are the same for every seed
    assert seed_overrides(config, "infer", 7) == seed_overrides(config, "embed", 7) == {}
    assert seed_overrides(config, "evaluate", 7) == {}
    assert model_seed({"seed": 42}) == 42 and model_seed({"seed": 42, "model_seed": 7}) == 7


def test_rule_params_carry_the_replica_seed(tmp_path):
    from lus_core.config import validate_config

    config = validate_config({"train": {"seeds": [42, 9]}, "results": str(tmp_path),
                              "dataset": {"synthetic": {"enabled": True}}})
    one = json.loads(step_params(config, "train", 42))
    other = json.loads(step_params(config, "train", 9))
    assert "model_seed" not in one and other == {**one, "model_seed": 9}
    assert json.loads(step_params(config, "fit_confidence", 9))["seed"] == 9


def _val(scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"config_id": c, "row_type": "cnn_only", "backbone": "b", "confidence": "", "space": "",
                          "k": None, "fallback": "", "diversity": "", "val_accuracy": s, "val_balanced_accuracy": s,
                          "val_macro_f1": s, "val_qwk": s, "val_fallback_rate": 0.0, "val_n_frames": 10, "val_n_patients": 3,
                          "val_out_of_fold": True} for c, s in scores.items()])


def test_the_choice_is_made_on_the_mean_over_seeds(tmp_path):
    """Seed A alone would choose cfg1 (0.9 against 0.6); over both seeds cfg2 is better (0.575
    against 0.5), and every replica, reading the same files, chooses it."""
    tables = {"a": _val({"cfg1": 0.9, "cfg2": 0.6}), "b": _val({"cfg1": 0.1, "cfg2": 0.55})}
    videos = {"a": {"b": [{"video_score": "max", "val_qwk": 0.2, "qwk": 0.9}]},
              "b": {"b": [{"video_score": "max", "val_qwk": 0.4, "qwk": 0.1}]}}
    for name, val in tables.items():
        write_validation(tmp_path / f"{name}.json", val, videos[name])
    read = [read_validation(tmp_path / f"{n}.json") for n in ("a", "b")]
    assert "qwk" not in read[0]["video_level"]["b"][0]  # test values are not written where choices read
    assert select_configuration(tables["a"], "qwk")["config_id"] == "cfg1"
    for own in tables.values():
        mean = mean_over_seeds(own, read, "qwk")
        for criterion in ("accuracy", "balanced_accuracy", "macro_f1", "qwk"):  # whichever the run chooses on
            assert np.allclose(mean[f"val_{criterion}"], [0.5, 0.575]), criterion
        assert np.allclose(mean["val_qwk_seed_sd"], [np.std([0.9, 0.1], ddof=1), np.std([0.6, 0.55], ddof=1)])
        assert select_configuration(mean, "qwk")["config_id"] == "cfg2"
    level = video_level_mean(videos["a"], read)
    assert np.isclose(level["b"][0]["val_qwk"], 0.3) and level["b"][0]["qwk"] == 0.9  # test values stay
    with pytest.raises(ValueError, match="configurations differ"):
        mean_over_seeds(_val({"cfg1": 0.1, "cfg3": 0.2}), read, "qwk")


def _seeded(fold, seed: int, rng):
    """A copy of `fold` scored by another seed's models (other final scores, same frames)."""
    frames = fold.frames.copy()
    frames["final"] = np.where(rng.random(len(frames)) < 0.5, frames["label"], rng.integers(0, 4, len(frames)))
    return type(fold)(fold.scope, fold.test_patients, fold.train_counts, fold.selected, frames, seed=seed,
                      replica=f"{fold.scope}_seed1")


def test_the_nested_estimate_pools_the_seeds_and_gives_each_seeds_own():
    rng = np.random.default_rng(5)
    first = [_fold("outer0", ["P1", "P2", "P3"], rng), _fold("outer1", ["P4", "P5"], rng)]
    for f in first:
        f.seed = 11
    second = [_seeded(f, 12, rng) for f in first]
    est = nested_estimate([first[0], second[0], first[1], second[1]], 4, n_boot=200, ci=0.9, seed=1)
    pooled = pd.concat([f.frames for f in first + second])
    assert est["n_frames"] == len(pooled) // 2 and est["n_outer_folds"] == 2 and est["n_patients"] == 5
    assert np.isclose(est["frame"]["accuracy"]["estimate"], accuracy_score(pooled.label, pooled.final))
    per_seed = {r["seed"]: r for r in est["seeds"]["per_seed"]}
    for seed, folds in ((11, first), (12, second)):
        own = pd.concat([f.frames for f in folds])
        assert np.isclose(per_seed[seed]["frame_accuracy"], accuracy_score(own.label, own.final))
        assert np.isclose(per_seed[seed]["frame_qwk"],
                          cohen_kappa_score(own.label, own.final, weights="quadratic", labels=range(4)))
    accs = [per_seed[s]["frame_accuracy"] for s in (11, 12)]
    spread = est["seeds"]["spread"]["frame_accuracy"]
    assert np.isclose(spread["sd"], np.std(accs, ddof=1)) and spread["min"] == min(accs)
    assert est["stability"]["configuration"]["of"] == 2  # one choice per outer fold, not per replica
    assert [f["scope"] for f in est["folds"]] == ["outer0", "outer1"]
    header, rows = seed_table({**est, "headline": ""})
    assert header[0] == "model seed" and [r[0] for r in rows[:2]] == ["11", "12"] and len(rows) == 5
    # one seed: no seed block, the estimate of the one seed's predictions
    alone = nested_estimate(first, 4, n_boot=200, ci=0.9, seed=1)
    assert "seeds" not in alone and seed_table(alone) == ([], [])


def test_replicas_of_an_outer_fold_must_have_chosen_the_same(tmp_path):
    rng = np.random.default_rng(0)
    fold = _fold("outer0", ["P1", "P2"], rng)
    other = _fold("outer0", ["P1", "P2"], rng, config="cfg B")
    split = {"outer": [{"test_patients": ["P1", "P2"], "train_counts": {"0": 1}}],
             "deployed": {"test_patients": [], "train_patients": ["P1", "P2"]}}
    files = []
    for i, f in enumerate((fold, other)):
        csv, summary = tmp_path / f"{i}.csv", tmp_path / f"{i}.json"
        write_selected_scores(f.frames, csv)
        summary.write_text(json.dumps({"selected": f.selected}))
        files.append((csv, summary))
    with pytest.raises(ValueError, match="seed replicas chose differently"):
        load_outer_folds(["outer0", "outer0_seed1"], [s for _, s in files], [c for c, _ in files], split,
                         seeds=[1, 2])
    loaded = load_outer_folds(["outer0", "outer0_seed1"], [files[0][1]] * 2, [files[0][0]] * 2, split, seeds=[1, 2])
    assert [(f.scope, f.replica, f.seed) for f in loaded] == [("outer0", "outer0", 1), ("outer0", "outer0_seed1", 2)]


def test_one_seed_given_as_train_seeds_is_todays_run(tiny_run, tmp_path):
    """`train.seeds: [the run's seed]` changes no job's config slice, input or output: a finished
    run with one seed has nothing to do (its files are bitwise what it was)."""
    from tests.workflow_helpers import planned_jobs

    overlay = tmp_path / "seeds.yaml"
    overlay.write_text("train: {seeds: [7]}\n")  # configs/tiny.yaml's seed
    assert planned_jobs(*tiny_run.with_configs(str(overlay))) == {}
    overlay.write_text("train: {seeds: [7, 9]}\n")
    plan = planned_jobs(*tiny_run.with_configs(str(overlay)))
    assert plan["train_seed1"] == 3 and plan["train_heads_seed1"] == 1  # scratch's 2 folds and all; the heads
    assert "train" not in plan and "train_heads" not in plan and plan["validate"] == plan["validate_seed1"] == 1


def test_the_report_rows_of_a_single_split_runs_seeds():
    from lus_core.report.seed_sections import seed_rows

    def summary(acc, qwk, vqwk):
        cell = lambda v: {"estimate": v, "lo": v - 0.1, "hi": v + 0.1}  # noqa: E731
        return {"class_order": "ordinal", "selected": {"config_id": "c", "test": {"accuracy": cell(acc),
                                                                                   "qwk": cell(qwk)}},
                "video_answer": {"test": {"accuracy": cell(0.5), "qwk": cell(vqwk)}}}

    header, rows = seed_rows([1, 2, 3], [summary(0.5, 0.2, 0.3), summary(0.6, 0.4, 0.1), summary(0.7, 0.3, 0.2)])
    assert header == ["model seed", "frame accuracy", "frame QWK", "video accuracy", "video QWK"]
    assert [r[0] for r in rows] == ["1", "2", "3", "mean over 3 seeds", "sd over 3 seeds"]
    assert rows[3][1] == "0.600" and rows[4][1] == f"{np.std([0.5, 0.6, 0.7], ddof=1):.3f}"
    assert rows[3][4] == "0.200" and rows[0][2].startswith("0.20")


@pytest.mark.slow
def test_a_single_split_run_with_two_seeds_reports_each_seeds_test_scores(tiny_run, tmp_path):
    """Seed 9 added to the finished tiny run: only its replica trains; both replicas choose the
    same configuration on their mean; the report shows each seed's test scores."""
    from tests.workflow_helpers import run_ok

    run = tiny_run.copy(tmp_path / "run")
    overlay = tmp_path / "seeds.yaml"
    overlay.write_text("train: {seeds: [7, 9]}\n")
    run_ok("--cores", "2", *run.with_configs(str(overlay)), timeout=1500)
    layout = RunLayout(str(run.results))
    first, second = (json.loads(Path(layout.scoped(s).summary()).read_text()) for s in ("", "seed1"))
    assert first["selected"]["config_id"] == second["selected"]["config_id"]
    assert first["test_patients"] == second["test_patients"]
    assert Path(layout.scoped("seed1").model("scratch", "all")).exists()
    page = Path(layout.report()).read_text()
    assert "<h2>The model seeds</h2>" in page and "mean over 2 seeds" in page
