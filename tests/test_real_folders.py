"""Real folders on the shared tiny run: `lus predict` keeps every video apart and scores what it can,
a cohort of grey and colour videos runs end to end, one run at a time per results folder, and the
same numbers whatever kernels the processor offers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.video_helpers import faststart
from tests.workflow_helpers import REPO, SNAKEMAKE, lus, snakemake

pytestmark = pytest.mark.slow
CNN = "scratch · CNN alone"  # the configuration used where which one does not matter


def _videos(results: Path, n: int) -> list[Path]:
    """Synthetic videos of the run's test patients (several, different content)."""
    split = json.loads((results / "split.json").read_text())
    index = pd.read_csv(results / "frame_index.csv", dtype={"patient": str})
    names = sorted(index[index.patient.isin(split["test_patients"])].video.unique())[:n]
    return [results / "synthetic" / "videos" / f"{v}.mp4" for v in names]


def _frames_of(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "frames.csv", dtype={"video": str})


# ----------------------------------------------------------------------------- lus predict


def test_videos_with_the_same_name_are_kept_apart(tiny_run, tmp_path):
    """a/x.mp4 and b/x.mp4 (two different videos), and x.mp4 beside x.MP4: each video its own id,
    frames and summary entry, never merged under one name."""
    one, two = _videos(tiny_run.results, 2)
    for folder, src in (("a", one), ("b", two)):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / "x.mp4")
    alone = {}
    for folder in ("a", "b"):
        run = lus("predict", tmp_path / folder / "x.mp4", "--run", tiny_run.results, "--out", tmp_path / f"alone_{folder}",
                  "--config-name", CNN, "--no-galleries")
        assert run.returncode == 0, run.stderr
        alone[folder] = _frames_of(tmp_path / f"alone_{folder}")
    run = lus("predict", tmp_path / "a", tmp_path / "b", "--run", tiny_run.results, "--out", tmp_path / "both",
              "--config-name", CNN, "--no-galleries")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert set(summary["videos"]) == {"a__x.mp4", "b__x.mp4"}
    assert {v["source"] for v in summary["videos"].values()} == {str(tmp_path / "a" / "x.mp4"),
                                                                   str(tmp_path / "b" / "x.mp4")}
    frames = _frames_of(tmp_path / "both")
    for folder in ("a", "b"):
        mine = frames[frames.video == f"{folder}__x.mp4"].drop(columns="video").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone[folder].drop(columns="video"))
    # one folder, two files whose names differ in case only
    same = tmp_path / "case"
    same.mkdir()
    shutil.copy(one, same / "x.mp4")
    shutil.copy(two, same / "x.MP4")
    run = lus("predict", same, "--run", tiny_run.results, "--out", tmp_path / "case_out", "--config-name", CNN,
              "--no-galleries")
    assert run.returncode == 0, run.stderr
    assert set(json.loads((tmp_path / "case_out" / "summary.json").read_text())["videos"]) == {"x.mp4", "x.MP4"}


def _predict(tiny_run, out: Path, *videos: Path) -> dict:
    """summary.json of `lus predict VIDEOS` with the CNN alone (exit status 0 asserted)."""
    run = lus("predict", *videos, "--run", tiny_run.results, "--out", out, "--config-name", CNN, "--no-galleries")
    assert run.returncode == 0, run.stderr
    return json.loads((out / "summary.json").read_text())


def test_symlinks_and_other_names_of_a_file_keep_the_names_given(tiny_run, tmp_path):
    """Symlinks a/x.mp4 and b/x.mp4 to videos elsewhere get a__x.mp4 and b__x.mp4 (their own
    names, not their targets'); every name of one file (a copy, its hard link, a symlink) is
    scored under its own id, and a video named through its folder and itself is scored once."""
    one, two = _videos(tiny_run.results, 2)
    for folder, src in (("a", one), ("b", two)):
        (tmp_path / "same" / folder).mkdir(parents=True)
        (tmp_path / "same" / folder / "x.mp4").symlink_to(src)
    summary = _predict(tiny_run, tmp_path / "linked", tmp_path / "same" / "a", tmp_path / "same" / "b")
    assert {vid: v["source"] for vid, v in summary["videos"].items()} == {
        "a__x.mp4": str(tmp_path / "same" / "a" / "x.mp4"), "b__x.mp4": str(tmp_path / "same" / "b" / "x.mp4")}
    names = tmp_path / "names"
    names.mkdir()
    shutil.copy(one, names / "copy.mp4")
    os.link(names / "copy.mp4", names / "hard.mp4")
    (names / "soft.mp4").symlink_to(names / "copy.mp4")
    summary = _predict(tiny_run, tmp_path / "named", names, names / "copy.mp4")
    assert {vid: v["source"] for vid, v in summary["videos"].items()} == {
        name: str(names / f"{name}.mp4") for name in ("copy", "hard", "soft")}
    frames = _frames_of(tmp_path / "named")
    assert frames.video.value_counts().nunique() == 1  # each name once, the same frames each


def test_names_that_differ_only_in_unsafe_characters_keep_their_own_ids(tiny_run, tmp_path):
    """`a b.mp4` and `a_b.mp4` make the same file-name-safe id: both are scored, each under an id of
    its own that summary.json maps to its file."""
    one, two = _videos(tiny_run.results, 2)
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(one, folder / "a b.mp4")
    shutil.copy(two, folder / "a_b.mp4")
    summary = _predict(tiny_run, tmp_path / "out", folder)
    sources = {vid: v["source"] for vid, v in summary["videos"].items()}
    assert sources == {"a_b.mp4~a1f10cd9": str(folder / "a b.mp4"), "a_b.mp4~38eec280": str(folder / "a_b.mp4")}
    assert set(_frames_of(tmp_path / "out").video) == set(sources)


def test_unicode_names_that_make_the_same_safe_id_get_distinct_ids_in_any_order():
    """Pairs whose unsafe characters all become "_" (accents, Chinese names): every id distinct,
    the same whatever the order of the paths, and the ids of the videos no one shares unchanged."""
    from lus_core.runs.predict import video_ids

    folder = Path("/hospital/videos")
    paths = [folder / name for name in ("Zürich é.mp4", "Zürich è.mp4", "左肺.mp4", "右肺.mp4", "left lung.mp4",
                                        "P01_v1.mp4", "a/x.mp4", "b/x.mp4")]
    ids = video_ids(paths)
    assert len(set(ids.values())) == len(paths)
    assert video_ids(paths[::-1]) == ids
    assert [ids[p] for p in paths[4:]] == ["left_lung", "P01_v1", "a__x.mp4", "b__x.mp4"]
    for p in paths[:4]:
        safe, digest = ids[p].split("~")
        assert safe == {"Z": "Z_rich__.mp4", "左": "__.mp4", "右": "__.mp4"}[p.name[0]]
        assert digest == hashlib.sha1(p.name.encode()).hexdigest()[:8]


def test_a_folder_with_a_bad_video_scores_the_others(tiny_run, tmp_path):
    folder = tmp_path / "hospital"
    folder.mkdir()
    good = _videos(tiny_run.results, 2)
    for src in good:
        shutil.copy(src, folder / src.name)
    (folder / "broken.mp4").write_bytes(b"\x00" * 4096)
    run = lus("predict", folder, "--run", tiny_run.results, "--out", tmp_path / "out", "--config-name", CNN,
              "--no-galleries")
    assert run.returncode == 3, run.stderr  # scored what it could, some failed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["videos"]) == {p.stem for p in good}
    assert list(summary["failed"]) == ["broken"] and "broken.mp4" in summary["failed"]["broken"]["reason"]
    assert "broken.mp4" in run.stderr and "could not be scored" in run.stderr
    assert set(_frames_of(tmp_path / "out").video) == {p.stem for p in good}
    # all or nothing, for scripts that want it
    run = lus("predict", folder, "--run", tiny_run.results, "--out", tmp_path / "strict", "--config-name", CNN,
              "--on-bad-video", "error")
    assert run.returncode == 2 and "broken.mp4" in run.stderr and not (tmp_path / "strict").exists()


def test_a_partly_decodable_video_is_scored_when_the_user_accepts_it(tiny_run, tmp_path):
    """A file whose container declares more frames than decode (its end is missing): refused by the
    run's dataset.min_decoded_fraction, scored with --min-decoded-fraction, the fraction recorded."""
    [src] = _videos(tiny_run.results, 1)
    whole = faststart(src, tmp_path / "whole.mp4")  # the index in front: a cut file still opens
    data = whole.read_bytes()
    cut = tmp_path / "videos" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    run = lus("predict", cut, "--run", tiny_run.results, "--out", tmp_path / "refused", "--config-name", CNN)
    assert run.returncode == 3 and "min_decoded_fraction" in run.stderr
    run = lus("predict", cut, "--run", tiny_run.results, "--out", tmp_path / "accepted", "--config-name", CNN,
              "--min-decoded-fraction", "0.3")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "accepted" / "summary.json").read_text())
    assert 0.3 <= summary["videos"]["cut"]["decoded_fraction"] < 1 and summary["min_decoded_fraction"] == 0.3


# ----------------------------------------------------------------------------- grey and colour


def test_a_cohort_of_grey_and_colour_videos_runs_end_to_end(tiny_run, tmp_path):
    """configs/tiny.yaml has two colour videos among ten grey ones: their stores keep colour (for
    the pictures), every step ran (the raw-pixel index included), and lus predict scores either kind."""
    channels = {}
    for store in (tiny_run.results / "frames").glob("*.h5"):
        with h5py.File(store) as f:
            channels[store.stem] = f["frames"].shape[-1]
    assert sorted(set(channels.values())) == [1, 3] and list(channels.values()).count(3) == 2
    assert (tiny_run.results / "index" / "scratch" / "raw.ann").exists()
    colour = next(v for v, c in channels.items() if c == 3)
    video = tiny_run.results / "synthetic" / "videos" / f"{colour}.mp4"
    run = lus("predict", video, "--run", tiny_run.results, "--out", tmp_path / "out", "--config-name",
              "scratch · fallback only · raw · k=3 · mean")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "galleries" / f"{colour}.png").exists()


# ----------------------------------------------------------------------------- one run per results folder


def test_a_second_run_on_the_same_results_folder_stops_at_once(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "first")
    lock = run.results / ".lus.lock"
    # a run that takes a while: both backbones' training again
    first = subprocess.Popen([SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *run.args, "--cores", "1",
                              "--forcerun", "train", "train_heads"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        # the copy carries the finished run's lock file (a released lock keeps its last holder's
        # line): wait for the first run's own pid in it, not just for a line
        deadline = time.time() + 120
        while f'"pid": {first.pid},' not in (lock.read_text() if lock.exists() else ""):
            assert first.poll() is None and time.time() < deadline, "the first run did not take the lock"
            time.sleep(0.2)
        other = tmp_path / "elsewhere"
        other.mkdir()
        args = [a if a != str(run.workdir) else str(other) for a in run.args]
        args = [a if a != "results=results" else f"results={run.results}" for a in args]
        started = time.time()
        second = snakemake(*args, "--cores", "1", "--forcerun", "report", timeout=120)  # work to do
        assert second.returncode != 0 and time.time() - started < 60
        assert f"{run.results}: the results folder is in use by process {first.pid}" in second.stderr
        assert "A killed run releases the lock" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # a killed run leaves no stale lock: the next run takes it
    from lus_core.workflow.results_lock import hold_results_folder

    assert hold_results_folder(run.results) == lock


# ----------------------------------------------------------------------------- the same numbers on any x86-64


def test_the_same_models_whatever_kernels_the_processor_offers(tiny_run, tmp_path):
    """Training again under another processor's kernels (oneDNN limited to SSE4.1, OpenBLAS's
    Sandy Bridge kernels, as on an older CPU; an AVX-512 machine differs the other way) gives
    bitwise the same predictions and evaluation: lus_core pins every library to AVX2."""
    from lus_core.cpu_kernels import has_avx2

    if not has_avx2():
        pytest.skip("the pins need an AVX2 processor")
    run = tiny_run.copy(tmp_path / "run")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "SSE41", "OPENBLAS_CORETYPE": "Sandybridge", "MKL_CBWR": "AVX"}
    proc = subprocess.run([SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *run.args, "--cores", "2",
                           "--forcerun", "train", "train_heads", "--", "results/eval/matrix.csv"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run.results / "eval" / "matrix.csv").read_bytes() == (tiny_run.results / "eval" / "matrix.csv").read_bytes()
    for backbone in ("scratch", "efficientnet_lite0"):
        with h5py.File(run.results / "predictions" / f"{backbone}.h5") as a, \
                h5py.File(tiny_run.results / "predictions" / f"{backbone}.h5") as b:
            for key in ("softmax", "logits", "embedding_all"):
                assert np.array_equal(a[key][()].view(np.uint8), b[key][()].view(np.uint8)), (backbone, key)


def test_a_folders_sub_folders_of_videos_are_named_never_dropped_silently(tmp_path, capsys):
    """lus predict FOLDER scores the folder's own videos; sub-folders holding videos are named in a
    warning (or, when the folder has none of its own, in the error), never skipped in silence."""
    from lus_core.runs.predict import VideoError, collect_videos

    (tmp_path / "site1").mkdir()
    for path in (tmp_path / "top.mp4", tmp_path / "site1" / "deep.mp4"):
        path.write_bytes(b"")
    assert collect_videos([tmp_path]) == [tmp_path / "top.mp4"]
    assert "sub-folders not searched; its sub-folders ['site1'] hold videos" in capsys.readouterr().err
    (tmp_path / "top.mp4").unlink()
    with pytest.raises(VideoError, match=r"no video in this folder; its sub-folders \['site1'\] hold videos"):
        collect_videos([tmp_path])
    assert collect_videos([tmp_path / "site1"]) == [tmp_path / "site1" / "deep.mp4"]
    assert capsys.readouterr().err == ""
