"""Frame stores are verified state of a run, and skipped videos are said out loud (user-style dataset).

One extraction (up to the frame index) is shared: a dataset of synthetic videos plus a corrupt,
an empty, a text and an unlabelled video, with dataset.on_bad_video: skip.
"""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lus_core.synth.dataset import generate_dataset
from tests.video_helpers import fan_frames, write_video
from tests.workflow_helpers import planned_jobs, run_ok, snakemake

pytestmark = pytest.mark.slow
SYNTH = {"n_patients": 3, "videos_per_patient": 1, "frames_per_video": 6, "size": 64, "fps": 5, "colour_videos": 0}
BAD = {"patient_X_corrupt.mp4": "corrupt", "patient_X_empty.mp4": "empty", "patient_X_text.mp4": "text",
       "patient_X_unlabelled.mp4": "unlabelled"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("storestate")
    labels = generate_dataset(root / "data", SYNTH, [0, 1, 2, 3], seed=5, progress=False)
    videos = labels.parent / "videos"
    (videos / "patient_X_corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (videos / "patient_X_empty.mp4").write_bytes(b"")
    (videos / "patient_X_text.mp4").write_text("these are my notes, not a video\n")
    write_video(videos / "patient_X_unlabelled.mp4", fan_frames(4))
    table = pd.read_csv(labels)
    extra = pd.DataFrame({"video": ["patient_X_corrupt.mp4", "patient_X_empty.mp4", "patient_X_text.mp4"], "score": 1})
    pd.concat([table[["video", "score"]], extra]).to_csv(labels, index=False)
    # three patients cannot show every score: the config lists the scores the labels have (a class
    # no labelled video has is a config error, checked before any job)
    classes = sorted({*table["score"].astype(int), 1})
    results = root / "results"
    config = root / "config.yaml"
    config.write_text(
        f"results: {results}\nclasses: {classes}\n"
        "dataset:\n  synthetic: {enabled: false}\n"
        f"  video_dirs: [{videos}]\n  labels: {labels}\n  on_bad_video: skip\n"
        "frames: {size: 32}\nsplit: {k_test: 1, n_folds: 2}\n"
    )
    args = (f"--configfile={config}",)
    first = run_ok(str(results / "frame_index.csv"), "--cores", "2", *args, workdir=root / "wd")
    stores = sorted(str(p) for p in (results / "frames").glob("*.h5"))
    # the frame-store part of the default target (rule all lists the stores and their check)
    frame_targets = (*stores, str(results / "frames" / "verified.json"), str(results / "frame_index.csv"))
    return {"root": root, "results": results, "args": args, "first": first, "stores": stores,
            "frame_targets": frame_targets, "wd": root / "wd"}


def test_skipped_videos_are_printed_at_the_end(run):
    text = run["first"].stdout + run["first"].stderr
    assert "4 video(s) were SKIPPED" in text
    for name in BAD:
        assert name in text
    assert "no label" in text  # the unlabelled one, with its reason
    skipped = pd.read_csv(run["results"] / "skipped_videos.csv")
    assert sorted(skipped.video) == sorted(n.removesuffix(".mp4") for n in BAD)


def test_deleted_store_is_rebuilt_with_only_its_dependents(run):
    wd, args = run["wd"], run["args"]
    before = planned_jobs(*args, workdir=wd)
    assert "extract_frames" not in before and "frame_index" not in before
    store = next(s for s in run["stores"] if "patient_P" in s)
    shutil.move(store, store + ".kept")
    try:
        after = planned_jobs(*args, workdir=wd)
        assert after == {**before, "extract_frames": 1, "verify_frame_stores": 1, "frame_index": 1}
    finally:
        shutil.move(store + ".kept", store)


def test_zeroed_store_stops_with_its_name_and_is_reextracted(run):
    wd, args, results = run["wd"], run["args"], run["results"]
    index_before = (results / "frame_index.csv").read_text()
    store = next(s for s in run["stores"] if "patient_P" in s)
    with open(store, "r+b") as f:  # overwrite every byte with zeros, as in the issue
        f.write(b"\x00" * Path(store).stat().st_size)
    failed = snakemake(str(results / "frame_index.csv"), "--cores", "1", *args, workdir=wd)
    assert failed.returncode != 0
    assert f"{store}: damaged frame store" in failed.stdout + failed.stderr
    # the index was never deleted or replaced; the bad store was moved aside, not deleted
    assert (results / "frame_index.csv").read_text() == index_before
    assert (results / "frames" / (store.split("/")[-1] + ".damaged")).exists()
    run_ok(*run["frame_targets"], "--cores", "2", *args, workdir=wd)
    with h5py.File(store) as f:
        assert len(f["frames"]) > 0
    assert planned_jobs(*run["frame_targets"], *args, workdir=wd) == {}
