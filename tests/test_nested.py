"""Nested patient cross-validation (split.outer_folds K > 1): the outer groups, the scopes every
training-dependent step runs in, the pooled estimate, and a finished nested run - whose outer
folds never read their test patients' labels."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score

from lus_core.config import load_schema
from lus_core.evaluation.nested import OuterFold, load_outer_folds, nested_estimate
from lus_core.evaluation.selected_scores import COLUMNS, write_selected_scores
from lus_core.runs.layout import RunLayout
from lus_core.split.folds import natural_sorted
from lus_core.split.outer import group_sizes
from lus_core.split.scopes import DEPLOYED, outer_scopes, scope_split, scopes
from lus_core.split.step import run_balance_split
from tests.test_split import step_config, write_frame_index
from tests.workflow_helpers import lus, planned_jobs, run_ok

NESTED = "configs/tiny-nested.yaml"


# ----------------------------------------------------------------------------- the outer groups


def _cohort(tmp_path, n: int = 13, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_patient = {f"P{i + 1}": list(rng.integers(0, 4, size=int(rng.integers(6, 30)))) for i in range(n)}
    return write_frame_index(tmp_path / "frame_index.csv", per_patient)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_outer_groups_test_every_patient_once_and_train_on_the_rest(tmp_path, k):
    frames = _cohort(tmp_path)
    split = run_balance_split(str(tmp_path / "frame_index.csv"), str(tmp_path / "split.json"),
                              step_config(outer_folds=k, n_folds=2, force_train=["P7"]))
    everyone = natural_sorted(frames.patient.unique())
    tested = [p for entry in split["outer"] for p in entry["test_patients"]]
    assert sorted(tested) == sorted(set(tested)) and "P7" not in tested
    assert set(tested) == set(everyone) - {"P7"}
    assert sorted(len(e["test_patients"]) for e in split["outer"]) == sorted(group_sizes(12, k))
    for o, entry in enumerate(split["outer"]):
        part = scope_split(split, f"outer{o}")
        assert part is entry and entry["outer"] == o
        assert set(entry["train_patients"]) == set(everyone) - set(entry["test_patients"])
        counted = frames[frames.patient.isin(entry["test_patients"])].label.value_counts()
        assert entry["test_counts"] == {str(c): int(counted.get(c, 0)) for c in range(4)}
        for fold in entry["folds"]:  # inner folds only on the fold's training patients
            assert not set(fold["val_patients"]) & set(entry["test_patients"])
            assert set(fold["val_patients"]) | set(fold["train_patients"]) == set(entry["train_patients"])
    deployed = scope_split(split, DEPLOYED)
    assert deployed["test_patients"] == [] and deployed["train_patients"] == everyone
    assert {p for f in deployed["folds"] for p in f["val_patients"]} == set(everyone)
    assert json.loads((tmp_path / "split.json").read_text()) == split


def test_group_sizes_put_the_smaller_groups_first_where_the_search_is_widest():
    assert group_sizes(52, 5) == [10, 10, 10, 11, 11] and group_sizes(40, 5) == [8] * 5
    # the POCUS diagnosis cohort (52 patients, 5 outer folds): the first exact search, over every
    # patient, stays within the default split.max_combinations
    limit = load_schema()["properties"]["split"]["properties"]["max_combinations"]["default"]
    assert math.comb(52, group_sizes(52, 5)[0]) <= limit < math.comb(52, 11)


def test_the_first_outer_group_is_the_balanced_search_of_the_cohort(tmp_path):
    """Group 1 is exactly the single split's choice of as many patients (the same exact search)."""
    _cohort(tmp_path)
    nested = run_balance_split(str(tmp_path / "frame_index.csv"), str(tmp_path / "n.json"),
                               step_config(outer_folds=3, n_folds=2))
    single = run_balance_split(str(tmp_path / "frame_index.csv"), str(tmp_path / "s.json"),
                               step_config(k_test=len(nested["outer"][0]["test_patients"]), n_folds=2))
    assert nested["outer"][0]["test_patients"] == single["test_patients"]
    assert single["outer_folds"] == 1 and scope_split(single, DEPLOYED) is single


def test_outer_split_refusals(tmp_path):
    _cohort(tmp_path, n=4)
    csv, out = str(tmp_path / "frame_index.csv"), str(tmp_path / "s.json")
    with pytest.raises(ValueError, match="force_test"):
        run_balance_split(csv, out, step_config(outer_folds=2, n_folds=2, force_test=["P1"]))
    with pytest.raises(ValueError, match="need at least 5 patients"):
        run_balance_split(csv, out, step_config(outer_folds=5, n_folds=2))
    assert not Path(out).exists()
    with pytest.raises(ValueError, match="no outer fold 3"):
        scope_split(run_balance_split(csv, out, step_config(outer_folds=2, n_folds=2)), "outer3")


def test_scopes_and_their_folders():
    assert scopes({"split": {"outer_folds": 1}}) == [DEPLOYED] and outer_scopes({"split": {"outer_folds": 1}}) == []
    assert scopes({"split": {"outer_folds": 3}}) == [DEPLOYED, "outer0", "outer1", "outer2"]
    layout = RunLayout("results/x")
    assert layout.scoped(DEPLOYED) is layout
    assert layout.scoped("outer2").model("b", "all") == "results/x/outer/2/models/b/all.pt"
    assert layout.scoped("outer2").summary() == "results/x/outer/2/eval/summary.json"


# ----------------------------------------------------------------------------- the pooled estimate


def _fold(scope, patients, rng, n_frames=6, config="cfg A", train_counts=None) -> OuterFold:
    rows = []
    for p in patients:
        label = rng.integers(0, 4, n_frames)
        rows.append(pd.DataFrame({"patient": p, "video": f"{p}_v", "label": label,
                                  "cnn": np.where(rng.random(n_frames) < 0.5, label, rng.integers(0, 4, n_frames)),
                                  "final": np.where(rng.random(n_frames) < 0.7, label, rng.integers(0, 4, n_frames)),
                                  "trusted": rng.random(n_frames) < 0.8, "config_id": config}))
    frames = pd.concat(rows, ignore_index=True)
    frames.insert(0, "frame_id", [hash((scope, i)) % 100000 for i in range(len(frames))])
    selected = {"config_id": config, "row_type": "combined", "backbone": "b", "confidence": "msp", "space": "raw",
                "criterion": "qwk", "validation_score": 0.5}
    return OuterFold(scope, list(patients), train_counts or {"0": 5, "1": 9, "2": 3, "3": 1}, selected, frames)


def test_pooled_estimate_is_every_patients_held_out_score():
    rng = np.random.default_rng(3)
    folds = [_fold("outer0", ["P1", "P2", "P3"], rng), _fold("outer1", ["P4", "P5"], rng, config="cfg B"),
             _fold("outer2", ["P6", "P7", "P8"], rng, train_counts={"0": 1, "1": 1, "2": 7, "3": 1})]
    est = nested_estimate(folds, 4, n_boot=200, ci=0.9, seed=1)
    pooled = pd.concat([f.frames for f in folds])
    assert est["n_patients"] == 8 and est["n_frames"] == len(pooled) and est["n_outer_folds"] == 3
    assert np.isclose(est["frame"]["accuracy"]["estimate"], accuracy_score(pooled.label, pooled.final))
    assert np.isclose(est["frame"]["qwk"]["estimate"],
                      cohen_kappa_score(pooled.label, pooled.final, weights="quadratic", labels=range(4)))
    assert np.isclose(est["frame_cnn"]["accuracy"]["estimate"], accuracy_score(pooled.label, pooled.cnn))
    # the baseline: each fold's most frequent training score (1, 1, 2)
    majority = np.concatenate([np.full(len(f.frames), m) for f, m in zip(folds, (1, 1, 2), strict=True)])
    diff = accuracy_score(pooled.label, pooled.final) - accuracy_score(pooled.label, majority)
    assert np.isclose(est["frame"]["accuracy_minus_majority"]["diff"], diff)
    assert est["frame"]["accuracy"]["lo"] <= est["frame"]["accuracy"]["estimate"] <= est["frame"]["accuracy"]["hi"]
    assert est["stability"]["configuration"] == {"most_common": "cfg A", "n_folds": 2, "of": 3, "distinct": 2}
    assert est["stability"]["recipe"]["n_folds"] == 3
    assert [f["scope"] for f in est["folds"]] == ["outer0", "outer1", "outer2"]


def test_load_outer_folds_refuses_a_patient_tested_twice_or_never(tmp_path):
    rng = np.random.default_rng(0)
    folds = [_fold("outer0", ["P1", "P2"], rng), _fold("outer1", ["P3", "P4"], rng)]
    split = {"outer": [{"test_patients": ["P1", "P2"], "train_counts": {"0": 1}},
                       {"test_patients": ["P3", "P4"], "train_counts": {"0": 1}}],
             "deployed": {"test_patients": [], "train_patients": ["P1", "P2", "P3", "P4"]}}
    files = []
    for f in folds:
        csv, summary = tmp_path / f"{f.scope}.csv", tmp_path / f"{f.scope}.json"
        write_selected_scores(f.frames, csv)
        summary.write_text(json.dumps({"selected": f.selected}))
        files.append((csv, summary))
    scopes_ = ["outer0", "outer1"]
    loaded = load_outer_folds(scopes_, [s for _, s in files], [c for c, _ in files], split)
    assert [f.test_patients for f in loaded] == [["P1", "P2"], ["P3", "P4"]]
    assert list(loaded[0].frames.columns) == list(COLUMNS)
    with pytest.raises(ValueError, match="every patient must be tested exactly once"):
        load_outer_folds(scopes_, [s for _, s in files], [c for c, _ in files],
                         {**split, "deployed": {"train_patients": ["P1", "P2", "P3", "P4", "P5"]}})
    with pytest.raises(ValueError, match="are not outer fold outer1's test patients"):
        load_outer_folds(scopes_, [s for _, s in files], [files[0][0], files[0][0]], split)


# ----------------------------------------------------------------------------- a finished nested run


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory, tiny_run):
    """configs/tiny.yaml with configs/tiny-nested.yaml: 6 patients in 3 outer folds."""
    workdir = tmp_path_factory.mktemp("nested_run")
    args = ("--configfile", "configs/tiny.yaml", NESTED, "--config", "results=results", "--directory", str(workdir))
    run_ok("--cores", "2", *args, timeout=1500)
    return workdir / "results", args


@pytest.mark.slow
def test_nested_run_estimates_from_every_patient_and_deploys_the_all_patient_choice(nested_run, tiny_run, tmp_path):
    results, args = nested_run
    layout = RunLayout(results)
    split = json.loads(Path(layout.split()).read_text())
    estimate = json.loads(Path(layout.nested()).read_text())
    pooled = pd.read_csv(layout.nested_predictions(), dtype={"patient": str})
    index = pd.read_csv(layout.frame_index(), dtype={"patient": str})
    # every frame once, scored by the fold that tested its patient
    assert sorted(pooled.frame_id) == sorted(index.frame_id) and estimate["n_patients"] == 6
    for o, entry in enumerate(split["outer"]):
        part = pooled[pooled.outer == f"outer{o}"]
        assert sorted(set(part.patient)) == sorted(entry["test_patients"])
        summary = json.loads(Path(layout.scoped(f"outer{o}").summary()).read_text())
        assert summary["test_patients"] == sorted(entry["test_patients"])
        assert set(part.config_id) == {summary["selected"]["config_id"]}
    assert np.isclose(estimate["frame"]["accuracy"]["estimate"], accuracy_score(pooled.label, pooled.final))
    videos = pd.read_csv(layout.nested_videos())
    assert len(videos) == index.video.nunique() == estimate["n_videos"]
    assert np.isclose(estimate["video"]["qwk"]["estimate"],
                      cohen_kappa_score(videos.label, videos.pred, weights="quadratic", labels=range(4)))
    # the report opens with the estimate of the procedure
    page = Path(layout.report()).read_text()
    assert page.index(estimate["headline"].split(" is ")[0]) < page.index("The deployed configuration")
    assert "from nested cross-validation over 6 patients in 3 outer folds" in page
    # the deployed scope trained on every patient and chose among every patient's out-of-fold scores
    deployed = json.loads(Path(layout.summary()).read_text())
    assert deployed["test_patients"] == [] and "test" not in deployed["selected"]
    assert deployed["counts"]["n_validation_patients"] == 6
    manifest = json.loads(Path(layout.manifest()).read_text())
    assert "models/efficientnet_lite0/all.pt" in manifest["files"]
    # the embedding cache of the frozen encoder is computed once, shared by the four scopes: a
    # nested plan has as many embedding jobs as the single run's
    fresh = tmp_path / "plan"
    fresh.mkdir()
    single = tmp_path / "single.yaml"
    single.write_text("train: {backbones: [efficientnet_lite0]}\n")
    nested_plan = planned_jobs(*args[:-1], str(fresh))
    single_plan = planned_jobs("--configfile", "configs/tiny.yaml", str(single), "--config", "results=results",
                               "--directory", str(fresh))
    assert nested_plan["embed"] == single_plan["embed"] > 0
    # 2 inner folds and `all` per scope, the output layers of the frozen encoder in one job
    assert nested_plan["train_heads_outer0"] == nested_plan["train_heads"] == 1
    # lus predict uses the deployed model and configuration
    video = next(Path(results / "synthetic").rglob("*.mp4"))
    out = tmp_path / "pred"
    proc = lus("predict", str(video), "--run", str(results), "--out", str(out), "--no-galleries")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["configuration"]["config_id"] == \
        deployed["selected"]["config_id"]
    # the model card states the nested estimate, not a test set the deployed model does not have;
    # `lus export` ships it beside the deployed scorer
    card = Path(layout.model_card()).read_text()
    assert estimate["headline"] in card and "Nested cross-validation by patient: 3 outer folds" in card
    assert "## Patient-level estimate (test patients)" not in card
    export = tmp_path / "export"
    proc = lus("export", "--run", str(results), "--out", str(export))
    assert proc.returncode == 0, proc.stderr
    assert (export / "model_card.md").read_text() == card and (export / "model.onnx").stat().st_size > 0


@pytest.mark.slow
def test_an_outer_fold_never_reads_its_test_patients_labels(nested_run, tmp_path):
    """Scramble outer fold 0's test patients' labels and run that fold again: everything it chose
    and every validation score stays bitwise the same; only its test scores move."""
    results, args = nested_run
    work = tmp_path / "copy"
    shutil.copytree(results.parent, work, symlinks=True)
    layout = RunLayout(work / "results")
    before = pd.read_csv(layout.scoped("outer0").matrix())
    test = json.loads(Path(layout.split()).read_text())["outer"][0]["test_patients"]
    index = pd.read_csv(layout.frame_index(), dtype={"patient": str, "video": str})
    held_out = index.patient.isin(test)
    index.loc[held_out, "label"] = (index.loc[held_out, "label"] + 2) % 4  # every test label changes
    index.to_csv(layout.frame_index(), index=False)
    fold_rules = ["train_heads_outer0", "infer_outer0", "fit_confidence_outer0", "build_index_outer0",
                  "query_neighbors_outer0", "fit_video_model_outer0", "evaluate_outer0"]
    # the content change is the point; the rest of the run (the split, the other folds) stays as it was
    run_ok("--cores", "2", *args[:-1], str(work), "--rerun-triggers", "params", "code", "input",
           "--forcerun", *fold_rules, "--", str(Path(layout.scoped("outer0").summary()).relative_to(work)),
           timeout=900)
    # the matrix is sorted by test score: compare configuration by configuration
    before = before.sort_values("config_id", kind="stable").reset_index(drop=True)
    after = pd.read_csv(layout.scoped("outer0").matrix()).sort_values("config_id", kind="stable").reset_index(drop=True)
    val = [c for c in before.columns if c.startswith("val_")] + ["config_id", "selected"]
    pd.testing.assert_frame_equal(after[val], before[val], check_exact=True)
    assert not np.allclose(after.accuracy.to_numpy(), before.accuracy.to_numpy())
    chosen = json.loads(Path(layout.scoped("outer0").summary()).read_text())["selected"]["config_id"]
    assert chosen == before.loc[before.selected, "config_id"].iloc[0]


def test_every_outer_fold_rule_passes_its_steps_slice(tmp_path):
    """An outer fold's (and a seed replica's) copy of a rule declares the same config slice as the
    rule (step_config), a replica's with its seed where the step draws from it."""
    import re

    from lus_core.split.scopes import seed_overrides
    from lus_core.workflow.step_config import step_of_rule
    from tests.dag_plans import DryRuns

    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("train: {seeds: [7, 8]}\n")  # configs/tiny.yaml's seed, and another
    params = DryRuns(tmp_path, ["configs/tiny.yaml", NESTED, seeds], {"results": "results"}).rule_params()
    scoped = {name: m[1] for name in params if (m := re.search(r"_((?:outer\d+_)?seed\d+|outer\d+)$", name))}
    assert {"train_heads_outer0", "evaluate_outer2", "fit_video_model_outer1", "nested_estimate",
            "train_heads_outer0_seed1", "validate_seed1", "evaluate_outer2_seed1"} <= set(params)
    for name, scope in scoped.items():
        step = step_of_rule(name)
        base = name.removesuffix("_" + scope)
        extra = seed_overrides({"seed": 7}, step, 8) if "seed" in scope else {}
        assert json.loads(params[name]["config"]) == {**json.loads(params[base]["config"]), **extra}, name
        if step in ("train", "infer", "fit_video_model", "evaluate", "validate"):  # they read split.json
            assert params[name]["scope"] == scope, name


@pytest.mark.slow
def test_nested_recipes_are_compared_on_every_patients_pooled_video_answer(nested_run, tiny_run, tmp_path):
    from lus_core.runs.markdown import results_markdown
    from lus_core.runs.nested_recipes import compare_nested_recipes

    results, _ = nested_run
    twin = tmp_path / "twin"  # the same procedure under another name: every difference is 0
    shutil.copytree(results, twin)
    table, notes = compare_nested_recipes([results, twin], n_boot=50)
    videos = pd.read_csv(RunLayout(results).nested_videos())
    qwk = cohen_kappa_score(videos.label, videos.pred, weights="quadratic", labels=range(4))
    assert list(table.recipe) == [results.name, "twin"] and notes["n_patients"] == 6
    assert table.video_accuracy[0] == pytest.approx(accuracy_score(videos.label, videos.pred))
    assert table.video_qwk[1] == pytest.approx(qwk)
    assert (table.delta == 0).all() and (table.delta_lo == 0).all() and table.chosen.tolist() == [True, False]
    # a twin whose pooled answers are all right: Δ is its QWK (1) minus the reference's, paired
    perfect = videos.assign(pred=videos.label)
    perfect.to_csv(RunLayout(twin).nested_videos(), index=False)
    table, _ = compare_nested_recipes([results, twin], n_boot=50)
    assert table.delta[1] == pytest.approx(1 - qwk) and table.video_accuracy[1] == 1
    page = results_markdown(results, "t", "c", recipes=[twin])
    assert "## Recipes (nested cross-validation)" in page and f"{results.name} (chosen)" in page
    with pytest.raises(ValueError, match="not nested"):
        compare_nested_recipes([results, tiny_run.results])


@pytest.mark.slow
def test_model_seeds_replicate_every_scope_and_choose_on_their_mean(nested_run, tmp_path):
    """train.seeds over a finished nested run (seed 7): [7] is today's run (nothing reruns); [7, 8]
    adds seed 8's replica of every scope without retraining seed 7's models, every replica of a
    scope chooses on the mean of the seeds' validation scores, and the estimate pools both seeds."""
    from lus_core.evaluation.seeds import read_validation

    results, args = nested_run
    work = tmp_path / "seeds"
    shutil.copytree(results.parent, work, symlinks=True)
    same, two = tmp_path / "same.yaml", tmp_path / "two.yaml"
    same.write_text("train: {seeds: [7]}\n")
    two.write_text("train: {seeds: [7, 8]}\n")
    base = (*args[:2], NESTED)  # --configfile tiny.yaml tiny-nested.yaml
    assert planned_jobs(*base, str(same), "--config", "results=results", "--directory", str(work)) == {}
    plan = planned_jobs(*base, str(two), "--config", "results=results", "--directory", str(work))
    assert plan["train_heads_outer0_seed1"] == plan["train_heads_seed1"] == 1
    assert "train_heads_outer0" not in plan and "train_heads" not in plan
    assert "infer_outer0" not in plan and "embed" not in plan  # seed 7's models and the embedding cache stay
    layout = RunLayout(work / "results")
    before = Path(layout.scoped("outer0").predictions("efficientnet_lite0")).read_bytes()
    run_ok("--cores", "2", *base, str(two), "--config", "results=results", "--directory", str(work), timeout=1500)
    assert Path(layout.scoped("outer0").predictions("efficientnet_lite0")).read_bytes() == before
    for scope in ("", "outer0", "outer1", "outer2"):
        first, second = layout.scoped(scope), layout.scoped(f"{scope}_seed1" if scope else "seed1")
        assert Path(second.predictions("efficientnet_lite0")).read_bytes() != before
        if scope:  # the deployed scope's choice is its first replica's (no other evaluate is needed)
            chosen = [json.loads(Path(s.summary()).read_text())["selected"]["config_id"] for s in (first, second)]
            assert chosen[0] == chosen[1], scope
        vals = [read_validation(s.validation())["configurations"].set_index("config_id") for s in (first, second)]
        matrix = pd.read_csv(first.matrix()).set_index("config_id")
        key = "val_" + json.loads(Path(first.summary()).read_text())["selected"]["criterion"]
        mean = (vals[0][key] + vals[1][key]) / 2
        assert np.allclose(matrix.loc[mean.index, key], mean, equal_nan=True), scope
    estimate = json.loads(Path(layout.nested()).read_text())
    pooled = pd.read_csv(layout.nested_predictions(), dtype={"patient": str})
    assert sorted(set(pooled.seed)) == [7, 8] and len(pooled) == 2 * estimate["n_frames"]
    assert np.isclose(estimate["frame"]["accuracy"]["estimate"], accuracy_score(pooled.label, pooled.final))
    for row in estimate["seeds"]["per_seed"]:
        own = pooled[pooled.seed == row["seed"]]
        assert np.isclose(row["frame_accuracy"], accuracy_score(own.label, own.final))
    assert "2 model seeds pooled" in estimate["headline"]
    page = Path(layout.report()).read_text()
    assert estimate["headline"] in page and "all seeds pooled (the estimate)" in page
    # recipes are compared seed by seed: every seed's pooled answers, never a one-seed run's against them
    from lus_core.runs.nested_recipes import compare_nested_recipes, nested_recipes_markdown

    twin = tmp_path / "twin"
    shutil.copytree(work / "results", twin)
    table, notes = compare_nested_recipes([work / "results", twin], n_boot=50)
    videos = pd.read_csv(layout.nested_videos())
    assert notes["n_seeds"] == 2 and notes["n_videos"] == estimate["n_videos"] == len(videos) // 2
    assert table.video_qwk[0] == pytest.approx(cohen_kappa_score(videos.label, videos.pred, weights="quadratic",
                                                                 labels=range(4)))
    # each seed alone, and its difference to the reference's same seed: a twin right on seed 8 only
    per_seed = {s: cohen_kappa_score(v.label, v.pred, weights="quadratic", labels=range(4)) for s, v in videos.groupby("seed")}
    assert table.per_seed[0] == pytest.approx(per_seed)
    right_on_8 = videos.assign(pred=np.where(videos.seed == 8, videos.label, videos.pred))
    right_on_8.to_csv(RunLayout(twin).nested_videos(), index=False)
    table, notes = compare_nested_recipes([work / "results", twin], n_boot=50)
    assert table.per_seed[1] == pytest.approx({7: per_seed[7], 8: 1.0})
    text = nested_recipes_markdown(table, notes)
    assert "| seed 7 | seed 8 |" in text and f"| twin | {per_seed[7]:.3f} (+0.000) | 1.000 ({1 - per_seed[8]:+.3f}) |" in text
    one_seed = tmp_path / "one_seed"
    shutil.copytree(results, one_seed)
    with pytest.raises(ValueError, match="model seeds"):
        compare_nested_recipes([work / "results", one_seed])
