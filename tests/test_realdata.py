"""The workflow end to end on the real sample data in ../shared/data, read in place."""

import json

import pandas as pd
import pytest

from tests.workflow_helpers import REPO, run_ok

DATA = REPO.parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present"),
]
TINY = """
frames: {{size: 32, max_frames_per_video: 12}}
split: {{k_test: {k}, n_folds: 2, outer_folds: 1}}  # one test group: the nested flow has its own e2e test
train: {{backbones: [scratch], image_size: 32, epochs: 1, batch_size: 16}}
confidence: {{methods: [msp, conformal, mlp]}}
similarity: {{spaces: [raw, embedding], k: [3], fallback: [mean], n_trees: 5}}
evaluate: {{n_bootstrap: 50, n_gallery: 1}}
"""


def _run(tmp_path, shipped_config: str, extra: str) -> tuple:
    override = tmp_path / "override.yaml"
    override.write_text(extra)
    results = tmp_path / "results"
    run_ok("--cores", "2", "--configfile", shipped_config, str(override), "--config", f"results={results}",
           timeout=1500, workdir=tmp_path)
    return results, pd.read_csv(results / "eval" / "matrix.csv"), json.loads((results / "split.json").read_text())


def test_covid_blues_handful_of_patients(tmp_path):
    videos = tmp_path / "lus_videos"
    videos.mkdir()
    patients = ("2", "6", "9", "10", "13", "37")  # together they hold every score 0-3
    for pid in patients:
        for src in sorted((DATA / "covid-blues" / "lus_videos").glob(f"patient_{pid}_*.mp4"))[:4]:
            (videos / src.name).symlink_to(src)
    extra = TINY.format(k=2) + (
        f"data_root: {DATA / 'covid-blues'}\n"
        f"dataset: {{video_dirs: [{videos}], labels: severity.csv, synthetic: {{enabled: false}}}}\n"
    )
    results, matrix, split = _run(tmp_path, "configs/covid-blues.yaml", extra)
    assert len(split["test_patients"]) == 2
    index = pd.read_csv(results / "frame_index.csv", dtype={"patient": str})
    assert set(index.patient) == set(patients)
    # 3 methods x 2 spaces, each with the plain and the one-per-video neighbour list (the shipped config)
    assert (matrix.row_type == "cnn").sum() == 1 and (matrix.row_type == "combined").sum() == 3 * 2 * 2
    assert matrix.config_id.str.endswith("one per video").sum() == matrix.row_type.isin(
        ["combined", "fallback_only", "oracle_detector"]).sum() / 2
    assert (results / "report" / "index.html").stat().st_size > 10_000


def test_pocus_five_containers(tmp_path):
    # the five sample videos hold scores 0, 1 and 3 only; a class no patient has is an error
    extra = TINY.format(k=1) + "classes: [0, 1, 3]\n" + f"data_root: {DATA / 'pocus-formats'}\n"
    results, matrix, split = _run(tmp_path, "configs/pocus.yaml", extra)
    index = pd.read_csv(results / "frame_index.csv", dtype={"patient": str})
    assert index.video.nunique() == 5 and index.patient.nunique() == 5
    assert len(split["test_patients"]) == 1
    assert (results / "report" / "index.html").exists() and len(matrix) > 0
