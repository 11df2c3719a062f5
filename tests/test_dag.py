"""The default DAG and the workflow's lint, as a user sees them before running anything."""

import pytest

from tests.workflow_helpers import planned_jobs, run_ok


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
