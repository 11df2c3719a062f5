"""The default DAG and the workflow's lint, as a user sees them before running anything."""

import pytest

from tests.workflow_helpers import planned_job_settings, planned_jobs, run_ok


@pytest.fixture(scope="module")
def default_plan(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("plan")
    return planned_jobs(workdir=workdir)


def test_dry_run_lists_every_step(default_plan):
    # 16 patients x 3 videos; 2 backbones x (3 folds + all); 8 methods in one job per backbone; 4 spaces
    assert default_plan == {
        "synth": 1, "extract_frames": 8, "verify_frame_stores": 1, "frame_index": 1, "balance_split": 1,
        "train": 8, "infer": 2, "fit_confidence": 2, "confidence_report": 2, "fit_video_model": 2,
        "build_index": 6, "build_tsne_index": 2, "query_neighbors": 8,
        "evaluate": 1, "gradcam": 1, "report": 1, "manifest": 1, "all": 1,
    }


def test_the_local_profile_plans_the_same_jobs(default_plan, tmp_path):
    """profiles/local (one workstation, GPU jobs one at a time) schedules, it does not change the DAG."""
    assert planned_jobs("--workflow-profile", "profiles/local", workdir=tmp_path) == default_plan


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_ok("--lint", timeout=300, workdir=tmp_path)
    assert "Congratulations" in proc.stdout + proc.stderr


def test_embedding_jobs_share_the_videos_and_a_new_video_changes_one_job_only():
    from lus_core.workflow.dag import job_shards

    videos = [f"patient_{p:02d}_video_{v}" for p in range(40) for v in range(6)]
    shards = job_shards(videos, 8)
    assert len(shards) == 8 and sorted(sum(shards.values(), [])) == sorted(videos)
    assert max(map(len, shards.values())) < 2 * len(videos) / 8  # no job holds most of the work
    grown = job_shards([*videos, "patient_99_video_0"], 8)
    assert sum(grown[s] != shards.get(s) for s in grown) == 1
    assert job_shards(videos, 1) == {0: sorted(videos)}
    assert job_shards(["a", "b"], 50).keys() <= set(range(50)) and len(job_shards(["a", "b"], 50)) == 2


def test_a_steps_resources_and_threads_reach_every_copy_of_its_rule(tmp_path):
    """Snakemake matches --set-resources / --set-threads by rule name; a step runs as one rule per
    scope (train_outer2) and per share of the videos (extract_frames_3). What a profile sets for
    the step reaches every copy (lus_core.workflow.step_resources); a setting for one copy wins."""
    jobs = planned_job_settings(
        "--cores", "8", "--configfile", "configs/tiny-nested.yaml", "--config", f"results={tmp_path}/r",
        "--set-resources", "train:gpu=1", "train:runtime=7", "train_outer1:gpu=2", "extract_frames:runtime=9",
        "--set-threads", "train=3", "infer=2", workdir=tmp_path)
    by_rule = {}
    for name, threads, resources in jobs:
        by_rule.setdefault(name, []).append((threads, resources))
    trains = [n for n in by_rule if n == "train" or n.startswith("train_outer")]
    assert sorted(trains) == ["train", "train_outer0", "train_outer1", "train_outer2"]
    for name in trains:
        for threads, resources in by_rule[name]:
            assert threads == 3 and resources["runtime"] == "7"
            assert resources["gpu"] == ("2" if name == "train_outer1" else "1"), name
    infers = [n for n in by_rule if n.startswith("infer")]
    assert len(infers) == 4 and all(t == 2 for n in infers for t, _ in by_rule[n])
    extracts = [n for n in by_rule if n.startswith("extract_frames_")]
    assert extracts and all(r["runtime"] == "9" for n in extracts for _, r in by_rule[n])
    # steps that were named nowhere keep their own settings
    for name, threads, resources in jobs:
        if name.startswith(("fit_confidence", "evaluate", "query_neighbors")):
            assert threads == 1 and resources.get("gpu", "0") == "0", name


def test_the_local_profiles_gpu_token_is_taken_by_every_scopes_training(tmp_path):
    """profiles/local gives `train` and `infer` its one `gpu` token; in a nested run each outer
    fold's copies take it too, so they never share the GPU."""
    jobs = planned_job_settings("--workflow-profile", "profiles/local", "--configfile", "configs/tiny-nested.yaml",
                                "--config", f"results={tmp_path}/r", workdir=tmp_path)
    gpu_jobs = {name for name, _, resources in jobs if resources.get("gpu") == "1"}
    assert gpu_jobs == {"train", "infer", *(f"{step}_outer{o}" for step in ("train", "infer") for o in range(3))}
