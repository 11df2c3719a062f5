"""Incremental reruns (the DAG only reruns what a change touches) on a user-style dataset."""

import os
import shutil
import time

import pandas as pd
import pytest

from lus_core.synth.dataset import generate_dataset
from tests.workflow_helpers import planned_jobs, run_ok

pytestmark = pytest.mark.slow
SYNTH = {"n_patients": 5, "videos_per_patient": 2, "frames_per_video": 6, "size": 64, "fps": 5, "colour_videos": 0}


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory):
    """A folder of videos + labels.csv as a user would have it, extracted once up to the index."""
    root = tmp_path_factory.mktemp("userdata")
    labels = generate_dataset(root / "data", SYNTH, [0, 1, 2, 3], seed=3, progress=False)
    spare = root / "spare"
    spare.mkdir()
    # hold one video back, to "add" it later
    held = sorted((labels.parent / "videos").glob("*.mp4"))[-1]
    shutil.move(held, spare / held.name)
    table = pd.read_csv(labels)
    table[table.video == held.name].to_csv(spare / "labels.csv", index=False)
    table[table.video != held.name].to_csv(labels, index=False)
    config = root / "config.yaml"
    config.write_text(
        f"results: {root / 'results'}\n"
        "dataset:\n  synthetic: {enabled: false}\n"
        f"  video_dirs: [{labels.parent / 'videos'}]\n  labels: {labels}\n  patient_from: column\n"
        "frames: {size: 32}\nsplit: {k_test: 1, n_folds: 2}\n"
    )
    args = (f"--configfile={config}", "--directory", str(root / "wd"))  # Snakemake's state beside the data
    run_ok(f"{root / 'results'}/frame_index.csv", "--cores", "2", *args)
    return root, labels, spare, args


def _target(root):
    return f"{root / 'results'}/frame_index.csv"


def test_nothing_changed_runs_nothing(user_dataset):
    root, _, _, args = user_dataset
    assert planned_jobs(_target(root), *args) == {}


def test_touching_one_video_without_change_runs_nothing(user_dataset):
    # Snakemake compares checksums of small inputs, so a bare touch is not a change
    root, labels, _, args = user_dataset
    video = sorted((labels.parent / "videos").glob("*.mp4"))[0]
    later = time.time() + 5
    os.utime(video, (later, later))
    assert planned_jobs(_target(root), *args) == {}


def test_changing_one_video_reextracts_only_its_job(user_dataset):
    root, labels, _, args = user_dataset
    first, second = sorted((labels.parent / "videos").glob("*.mp4"))[:2]
    shutil.copy(second, first)  # new content (and a new mtime), same name and label
    jobs = planned_jobs(_target(root), *args)
    assert jobs == {"extract_frames": 1, "verify_frame_stores": 1, "frame_index": 1}
    run_ok(_target(root), "--cores", "2", *args)


def test_adding_a_video_extracts_only_its_job(user_dataset):
    root, labels, spare, args = user_dataset
    for mp4 in spare.glob("*.mp4"):
        shutil.copy(mp4, labels.parent / "videos" / mp4.name)
    extra = pd.read_csv(spare / "labels.csv")
    pd.concat([pd.read_csv(labels), extra]).to_csv(labels, index=False)
    jobs = planned_jobs(_target(root), *args)
    assert jobs == {"extract_frames": 1, "verify_frame_stores": 1, "frame_index": 1}
    # downstream of the whole frame store everything reruns
    full = planned_jobs(*args)
    assert full.get("balance_split") == 1 and full.get("extract_frames") == 1
    # the job that gets the new video writes its store only: the others of the job come back as
    # they were (the same file), so adding one video re-extracts that video
    stores = root / "results" / "frames"
    before = {s.name: (s.stat().st_ino, s.read_bytes()) for s in stores.glob("*.h5")}
    run_ok(_target(root), "--cores", "2", *args)
    after = {s.name: (s.stat().st_ino, s.read_bytes()) for s in stores.glob("*.h5")}
    new = {f"{mp4.stem}.h5" for mp4 in spare.glob("*.mp4")}
    assert set(after) == set(before) | new
    assert {name for name in after if after[name] != before.get(name)} == new  # one store written


def test_code_version_follows_module_source(tmp_path, monkeypatch):
    """A step's code version is the hash of the lus_core files its script imports: an edit of one
    of them changes it, an edit elsewhere does not."""
    import lus_core.workflow.code_version as wf

    pkg = tmp_path / "lus_core"
    shutil.copytree(wf.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(wf, "PACKAGE", pkg)
    script = tmp_path / "balance_split.py"
    script.write_text("from lus_core.split.step import run_balance_split\n")
    before = wf.code_version_for(script)
    assert wf.code_version_for(script) == before
    with open(pkg / "similarity" / "index.py", "a") as f:  # not imported by the split step
        f.write("\n# an edit\n")
    assert wf.code_version_for(script) == before
    with open(pkg / "split" / "search.py", "a") as f:
        f.write("\n# an edit\n")
    assert wf.code_version_for(script) != before
