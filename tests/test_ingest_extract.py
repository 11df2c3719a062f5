
"""Dataset ingestion and frame extraction: real containers, patient parsing, bad input."""

import json
import threading
import time
import weakref
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from lus_core.config import validate_config
from lus_core.frames import decode as video_module
from lus_core.frames import extract as extract_module
from lus_core.frames.decode import VideoError, decode, find_sector, keep_plan
from lus_core.frames.extract import extract_job, extract_video, extract_videos, run_frame_index
from lus_core.frames.kept import KeptStores, prune
from lus_core.frames.labels import DatasetError, build_video_table
from lus_core.frames.store import (
    FORMAT_VERSION,
    FRAME_CODEC,
    FrameReader,
    build_frame_index,
    extraction_counts,
    read_frame_index,
    write_video_store,
)
from lus_core.io_utils import sha256_file
from tests.video_helpers import fan_frames, faststart, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
POCUS = SHARED / "pocus-formats"
BLUES = SHARED / "covid-blues"
needs_data = pytest.mark.skipif(not POCUS.exists(), reason="../shared/data not present")


def make_config(video_dirs, labels, **dataset):
    return validate_config(
        {
            "dataset": {"video_dirs": [str(d) for d in video_dirs], "labels": str(labels), **dataset},
            "frames": {"size": 48},
        }
    )


def extract_all(cfg, out_dir: Path):
    paths = []
    for entry in build_video_table(cfg["dataset"], cfg["classes"]):
        out = out_dir / f"{entry.video}.h5"
        extract_video(entry, out, cfg)
        paths.append(out)
    return paths


@needs_data
def test_every_pocus_container_decodes_with_its_label(tmp_path):
    cfg = make_config([POCUS / "videos"], POCUS / "labels.csv", patient_from="column")
    labels = pd.read_csv(POCUS / "labels.csv")
    paths = extract_all(cfg, tmp_path)
    assert len(paths) == 5  # .mpeg .gif .mov .MP4 .mp4
    for path in paths:
        with h5py.File(path) as f:
            assert f["frames"].shape[1:3] == (48, 48)
            assert f["frames"].dtype == np.uint8
            assert f["frames"].chunks == (1, *f["frames"].shape[1:])
            row = labels[labels.video.map(lambda v: Path(v).stem.replace("+", "_")) == f.attrs["video_id"]]
            assert set(f["label"][:]) == {int(row.score.iloc[0])}
            assert f.attrs["patient"] == row.patient.iloc[0]
            assert len(f.attrs["source_sha256"]) == 64
            assert len(f["frames"]) > 10


@needs_data
def test_two_covid_blues_patients_parse_patient_ids(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for src in sorted((BLUES / "lus_videos").glob("patient_1[03]_*.mp4")):
        (videos / src.name).symlink_to(src)
    cfg = make_config(
        [videos], BLUES / "severity.csv", label_columns={"video": "video_file", "score": "Severity Score"},
        patient_regex=r"patient_(\d+)_",
    )
    cfg["frames"]["stride"] = 4
    paths = extract_all(cfg, tmp_path / "frames")
    index = run_frame_index(paths, tmp_path / "index.csv", tmp_path / "frames.h5", tmp_path / "skipped.csv", cfg)
    assert set(index.patient) == {"10", "13"}
    severity = pd.read_csv(BLUES / "severity.csv").set_index("video_file")["Severity Score"]
    for video, labels in index.groupby("video")["label"]:
        assert set(labels) == {int(severity[video])}
    with h5py.File(tmp_path / "frames.h5") as f:  # the virtual dataset shows the same frames
        reader = FrameReader(read_frame_index(tmp_path / "index.csv"))
        for i in (0, len(index) // 2, len(index) - 1):
            np.testing.assert_array_equal(f["frames"][i], reader.frame(i))


def test_sector_crop_ignores_dark_first_frame():
    frames = fan_frames(10)[..., None]
    frames[0] = 0
    x0, y0, x1, y1 = find_sector(frames)
    assert x1 - x0 < frames.shape[2] * 0.95 and y1 - y0 > frames.shape[1] * 0.6


def test_frame_folder_and_stride(tmp_path):
    import cv2

    folder = tmp_path / "vids" / "patient_A_clip"
    folder.mkdir(parents=True)
    for i, f in enumerate(fan_frames(9)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    video = decode(folder, stride=2)
    assert list(video.frame_numbers) == [0, 2, 4, 6, 8]
    assert video.frames.shape[-1] == 1


@pytest.fixture
def dataset(tmp_path):
    vids = tmp_path / "vids"
    write_video(vids / "patient_A_1.mp4", fan_frames(8, seed=1))
    write_video(vids / "patient_B_1.avi", fan_frames(8, seed=2), fourcc="MJPG")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,score,start_frame,end_frame\npatient_A_1.mp4,0,0,3\npatient_A_1.mp4,2,4,\npatient_B_1,3,,\n")
    return vids, labels


def test_frame_level_ranges(dataset, tmp_path):
    vids, labels = dataset
    cfg = make_config([vids], labels)
    paths = extract_all(cfg, tmp_path / "frames")
    with h5py.File(paths[0]) as f:
        assert list(f["label"][:]) == [0, 0, 0, 0, 2, 2, 2, 2]
        assert list(f["frame_index"][:]) == list(range(8))


def test_extraction_is_idempotent(dataset, tmp_path):
    vids, labels = dataset
    cfg = make_config([vids], labels)
    first = extract_all(cfg, tmp_path / "a")
    second = extract_all(cfg, tmp_path / "b")
    for p, q in zip(first, second, strict=True):
        with h5py.File(p) as f, h5py.File(q) as g:
            np.testing.assert_array_equal(f["frames"][:], g["frames"][:])
            np.testing.assert_array_equal(f["label"][:], g["label"][:])


@pytest.mark.parametrize(
    "problem, message",
    [
        ("corrupt", "cannot open video|no frame could be decoded"),
        ("empty", "cannot open video|no frame could be decoded"),
        ("unlabelled", "no label in"),
        ("out_of_range", "label '7' is not one of the classes"),
        ("duplicate", "duplicate video id 'patient_A_1'"),
        ("no_patient", "cannot parse the patient"),
        ("no_column", "missing column 'score'"),
    ],
)
def test_bad_input_names_file_and_problem(dataset, tmp_path, problem, message):
    vids, labels = dataset
    text = labels.read_text()
    bad_name = None
    if problem in ("corrupt", "empty"):
        bad_name = "patient_C_1.mp4"
        (vids / bad_name).write_bytes(b"" if problem == "empty" else np.random.bytes(5000))
        text += f"{bad_name},1,,\n"
    elif problem == "unlabelled":
        bad_name = "patient_C_1.mp4"
        write_video(vids / bad_name, fan_frames(4))
    elif problem == "out_of_range":
        text = text.replace("patient_B_1,3", "patient_B_1,7")
    elif problem == "duplicate":
        write_video(vids / "patient_A_1.avi", fan_frames(4), fourcc="MJPG")
    elif problem == "no_patient":
        bad_name = "clip7.mp4"
        write_video(vids / bad_name, fan_frames(4))
        text += f"{bad_name},1,,\n"
    elif problem == "no_column":
        text = text.replace("score", "grade")
    labels.write_text(text)
    cfg = make_config([vids], labels)
    out = tmp_path / "frames"
    with pytest.raises((DatasetError, VideoError), match=message) as err:
        extract_all(cfg, out)
    if bad_name:
        assert bad_name in str(err.value)
    # nothing half-written is left behind
    assert not list(out.glob(".*.tmp")) if out.exists() else True


def test_skip_mode_lists_bad_videos(dataset, tmp_path):
    vids, labels = dataset
    (vids / "patient_C_1.mp4").write_bytes(b"not a video")
    labels.write_text(labels.read_text() + "patient_C_1.mp4,1,,\n")
    cfg = make_config([vids], labels, on_bad_video="skip")
    paths = extract_all(cfg, tmp_path / "frames")
    index = run_frame_index(paths, tmp_path / "i.csv", tmp_path / "v.h5", tmp_path / "skipped.csv", cfg)
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.video) == ["patient_C_1"]
    assert "patient_C_1" not in set(index.video)


def _one_video_dataset(tmp_path, frames_a):
    vids = tmp_path / "vids"
    write_video(vids / "patient_A_1.mp4", frames_a)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,score\npatient_A_1.mp4,1\n")
    return vids, labels


def test_truncated_faststart_mp4_is_a_bad_video(tmp_path):
    # moov (the index) in front: the cut file still opens and declares all 101 frames
    src = write_video(tmp_path / "src.mp4", fan_frames(101, seed=4))
    vids = tmp_path / "vids"
    vids.mkdir()
    whole = faststart(src, vids / "patient_A_1.mp4")
    data = whole.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    (vids / "patient_B_1.mp4").write_bytes(data[: len(data) // 2])
    labels = tmp_path / "labels.csv"
    labels.write_text("video,score\npatient_A_1.mp4,1\npatient_B_1.mp4,2\n")
    cfg = make_config([vids], labels)
    whole_entry, cut_entry = build_video_table(cfg["dataset"], cfg["classes"])
    assert extract_video(whole_entry, tmp_path / "frames" / "A.h5", cfg) == 101  # intact faststart: accepted
    with pytest.raises(VideoError, match=r"patient_B_1\.mp4: only \d+ of the 101 frames its container declares"):
        extract_video(cut_entry, tmp_path / "frames" / "B.h5", cfg)
    assert not (tmp_path / "frames" / "B.h5").exists()
    # skip mode: listed with the numbers as its reason
    cfg = make_config([vids], labels, on_bad_video="skip")
    paths = extract_all(cfg, tmp_path / "skip")
    run_frame_index(paths, tmp_path / "i.csv", tmp_path / "v.h5", tmp_path / "skipped.csv", cfg)
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.video) == ["patient_B_1"]
    assert "of the 101 frames its container declares" in skipped.reason[0]
    # the tolerance is the config's: accepting any shortfall stores the frames that decode
    cfg = make_config([vids], labels, min_decoded_fraction=0.0)
    assert 0 < extract_video(cut_entry, tmp_path / "frames" / "B.h5", cfg) < 101


def test_black_frames_are_dropped_and_counted(tmp_path):
    frames = fan_frames(30, seed=5)
    frames[:10] = 0
    vids, labels = _one_video_dataset(tmp_path, frames)
    cfg = make_config([vids], labels)
    [path] = extract_all(cfg, tmp_path / "frames")
    with h5py.File(path) as f:
        assert list(f["frame_index"][:]) == list(range(10, 30))
        assert f.attrs["n_blank_dropped"] == 10
    counts = extraction_counts([path]).iloc[0]
    assert (counts.n_stored, counts.n_blank_dropped, counts.n_source_frames) == (20, 10, 30)
    cfg["frames"]["drop_blank"] = False
    [path] = extract_all(cfg, tmp_path / "kept")
    assert extraction_counts([path]).iloc[0].tolist() == ["patient_A_1", 30, 30, 30, 0]


def test_all_blank_video_is_a_bad_video(tmp_path):
    vids, labels = _one_video_dataset(tmp_path, np.zeros((6, 96, 128), np.uint8))
    with pytest.raises(VideoError, match=r"patient_A_1\.mp4: all 6 kept frames are blank"):
        extract_all(make_config([vids], labels), tmp_path / "frames")


@pytest.mark.parametrize("declared", [None, 0, 90, 105])
def test_stride_and_max_frames_while_decoding(tmp_path, monkeypatch, declared):
    """Only the kept frames are retrieved, and they are those of the true frame count even when
    the container's count is wrong or missing."""
    path = write_video(tmp_path / "v.mp4", fan_frames(101, seed=6))
    full = decode(path)
    if declared is not None:
        monkeypatch.setattr(video_module._ContainerSource, "declared_frames", lambda self: declared)
    part = decode(path, stride=3, max_frames=7, min_decoded_fraction=0.9)
    assert list(part.frame_numbers) == list(keep_plan(101, 3, 7)) == [0, 18, 33, 48, 66, 84, 99]
    np.testing.assert_array_equal(part.frames, full.frames[part.frame_numbers])
    assert part.n_source_frames == 101
    # the sector comes from frames spread over the whole video, as from all decoded frames
    assert part.sector_box() == full.sector_box() == find_sector(full.frames)
    assert 32 <= len(part.sector_sample) < 64


def test_format_1_gzip_store_stays_readable(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:  # as the first format wrote it: gzip chunks, no format_version
        f.create_dataset("frames", data=frames, chunks=(1, 16, 16, 1), compression="gzip", compression_opts=1)
        f.create_dataset("label", data=np.array([0, 1, 2], np.int16))
        f.create_dataset("frame_index", data=np.arange(3, dtype=np.int32))
        f.attrs.update(video_id="old", patient="P")
    new = tmp_path / "new.h5"
    write_video_store(new, frames, [0, 1, 2], range(3), "P", "new", {})
    with h5py.File(new) as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert str(FRAME_CODEC["compression"]) in f["frames"]._filters  # the plugin filter, not gzip
    index = build_frame_index([old, new])
    np.testing.assert_array_equal(FrameReader(index).frames(range(6)), np.concatenate([frames, frames]))


def test_an_error_while_storing_a_decoded_frame_stops_the_decoding_thread():
    """Decoded frames are stored by a second thread (lus_core.frames.decode._FrameConsumer); a frame it
    cannot store (here: a different size) fails the decode with that error, and frames stay in
    decoding order."""
    from lus_core.frames.decode import VideoError, _FrameCollector, _FrameConsumer, _SectorSampler

    collector, sampler = _FrameCollector(Path("v.mp4"), 8), _SectorSampler(Path("v.mp4"), 8)
    with _FrameConsumer(collector, sampler) as consumer:
        for i in range(6):
            consumer.put(np.full((40, 50, 3), i, np.uint8), i, True, i % 2 == 0)
    frames, numbers = collector.result()
    assert numbers.tolist() == list(range(6)) and [int(f.mean()) for f in frames] == list(range(6))
    assert len(sampler.thumbs) == 3

    collector = _FrameCollector(Path("v.mp4"), 8)
    with pytest.raises(VideoError, match="frames change size mid-video"):
        with _FrameConsumer(collector, _SectorSampler(Path("v.mp4"), 8)) as consumer:
            consumer.put(np.zeros((40, 50, 3), np.uint8), 0, True, False)
            consumer.put(np.zeros((30, 50, 3), np.uint8), 1, True, False)
            for i in range(2, 50):  # the error reaches the decoding thread at a later frame or at the end
                consumer.put(np.zeros((40, 50, 3), np.uint8), i, True, False)


def _multi_video_dataset(tmp_path, n=5, bad=None):
    """n short videos of different lengths (video `bad` corrupt when given), one label each."""
    vids = tmp_path / "vids"
    rows = ["video,score"]
    for k in range(n):
        path = vids / f"patient_{k}_1.mp4"
        write_video(path, fan_frames(6 + 3 * k, seed=10 + k))
        if k == bad:
            path.write_bytes(b"\0" * 4096)
        rows.append(f"{path.name},{k % 4}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return vids, labels


def test_decoding_threads_leave_the_frames_unchanged(tmp_path):
    """Extraction decodes on one FFmpeg thread per video; FFmpeg's default threads give the same
    pixels (its threaded decoding is bit-exact), for every container the tests can write."""
    for name, fourcc in (("v.mp4", "mp4v"), ("v.avi", "MJPG")):
        path = write_video(tmp_path / name, fan_frames(40, seed=3), fourcc=fourcc)
        default, single = decode(path), decode(path, threads=1)
        np.testing.assert_array_equal(single.frames, default.frames)
        np.testing.assert_array_equal(single.sector_sample, default.sector_sample)
        assert video_module._ContainerSource(path, 1)._open().get(cv2.CAP_PROP_N_THREADS) == 1  # it reached FFmpeg


def test_a_backend_without_a_thread_count_opens_on_its_defaults(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", fan_frames(10, seed=4))
    real = cv2.VideoCapture

    def no_thread_param(name, *args):  # as a backend that refuses CAP_PROP_N_THREADS
        return real() if args and args[-1] else real(name, *args)

    monkeypatch.setattr(video_module.cv2, "VideoCapture", no_thread_param)
    np.testing.assert_array_equal(decode(path, threads=1).frames, decode(path).frames)


@needs_data
def test_decoding_threads_leave_real_containers_unchanged():
    for path in sorted((POCUS / "videos").iterdir()):
        default, single = decode(path), decode(path, threads=1)
        assert len(single.frames) == len(default.frames) > 10, path
        np.testing.assert_array_equal(single.frames, default.frames, err_msg=str(path))


def test_videos_decoded_at_once_are_stored_in_order_with_bounded_memory(tmp_path, monkeypatch):
    """extract_videos decodes DECODERS videos at a time while one is stored: the stores are
    those of one video per call, written in order, with at most DECODERS + 1 decoded videos
    alive at any time."""
    vids, labels = _multi_video_dataset(tmp_path, n=6)
    cfg = make_config([vids], labels)
    entries = build_video_table(cfg["dataset"], cfg["classes"])
    alive, peak, lock = [0], [0], threading.Lock()
    decode_entry = extract_module._decode_entry

    def counted(*args):
        decoded = decode_entry(*args)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        weakref.finalize(decoded.video, forget)
        return decoded

    def forget():  # runs in whichever thread drops the last reference
        with lock:
            alive[0] -= 1

    store_entry = extract_module._store_entry

    def slow_store(*args):  # a slow disk: decoded videos would pile up if nothing held them back
        time.sleep(0.1)
        return store_entry(*args)

    monkeypatch.setattr(extract_module, "_decode_entry", counted)
    monkeypatch.setattr(extract_module, "_store_entry", slow_store)
    stored = []
    outs = [tmp_path / "together" / f"{e.video}.h5" for e in entries]
    counts = extract_module.extract_videos(entries, outs, cfg, stored.append)
    assert stored == outs and counts == [6 + 3 * k for k in range(6)]
    assert 2 <= peak[0] <= extract_module.DECODERS + 1
    for entry, out in zip(entries, outs, strict=True):
        single = tmp_path / "single" / f"{entry.video}.h5"
        extract_video(entry, single, cfg)
        with h5py.File(out) as f, h5py.File(single) as g:
            for name in ("frames", "label", "frame_index"):
                np.testing.assert_array_equal(f[name][:], g[name][:])
            assert f.attrs["video_id"] == entry.video


def test_a_bad_video_among_several_stops_extraction_naming_it(tmp_path):
    """With on_bad_video: raise, the bad video's error (naming it) stops the job; the stores
    written before it are complete, none is written for it."""
    vids, labels = _multi_video_dataset(tmp_path, n=5, bad=2)
    cfg = make_config([vids], labels)
    entries = build_video_table(cfg["dataset"], cfg["classes"])
    outs = [tmp_path / "frames" / f"{e.video}.h5" for e in entries]
    with pytest.raises(VideoError, match=r"patient_2_1\.mp4: (cannot open video|no frame could be decoded)"):
        extract_videos(entries, outs, cfg)
    assert not any(out.exists() for out in outs[2:])  # nothing for it, nor after it
    assert not any(p.name.startswith(".") for p in outs[0].parent.iterdir())  # no temporary file left
    for out in outs[:2]:
        with h5py.File(out) as f:
            assert len(f["frames"]) == len(f["label"]) > 0


def test_colour_from_a_later_frame_on_makes_the_store_rgb(tmp_path):
    """A video is stored with one channel while gray; from its first colour frame (a Doppler-like
    box) on, RGB, the earlier frames repeated in all three channels."""
    gray = fan_frames(12, seed=7)
    frames = np.repeat(gray[..., None], 3, axis=-1)
    frames[6:, 40:60, 50:80] = (0, 0, 200)  # BGR: a red box from frame 6 on
    video = decode(write_video(tmp_path / "colour.mp4", frames))
    assert video.frames.shape[-1] == 3
    early, late = video.frames[:6].astype(int), video.frames[6:].astype(int)
    assert (early[..., 0] == early[..., 1]).all() and (early[..., 1] == early[..., 2]).all()
    box = late[:, 42:58, 52:78]
    assert (box[..., 0] - box[..., 2]).mean() > 100  # red in RGB order
    gray_video = decode(write_video(tmp_path / "gray.mp4", gray))
    assert gray_video.frames.shape[-1] == 1


def test_a_frame_cap_chooses_among_the_frames_that_are_not_blank(tmp_path):
    """max_frames_per_video: 8 on a video whose first 10 frames are black keeps 8 frames, spread
    over the frames that are not blank (blank frames are dropped before the cap samples)."""
    frames = fan_frames(40, seed=7)
    frames[:10] = 0
    vids, labels = _one_video_dataset(tmp_path, frames)
    cfg = make_config([vids], labels)
    cfg["frames"]["max_frames_per_video"] = 8
    [path] = extract_all(cfg, tmp_path / "frames")
    with h5py.File(path) as f:
        numbers = list(f["frame_index"][:])
    assert numbers == list(keep_plan(30, 1, 8) + 10)  # evenly spaced over frames 10..39
    # without blank frames the cap samples as before, in one pass
    vids2, labels2 = _one_video_dataset(tmp_path / "plain", fan_frames(40, seed=7))
    cfg2 = make_config([vids2], labels2)
    cfg2["frames"]["max_frames_per_video"] = 8
    [path2] = extract_all(cfg2, tmp_path / "frames2")
    with h5py.File(path2) as f:
        assert list(f["frame_index"][:]) == list(keep_plan(40, 1, 8))


def _kept_job(tmp_path, cfg, entries, code="v1"):
    stores = [tmp_path / "frames" / f"{e.video}.h5" for e in entries]
    records = [tmp_path / "frames" / f"{e.video}.record.json" for e in entries]
    for f in [*stores, *records]:  # Snakemake deletes a job's outputs before it runs it again
        f.unlink(missing_ok=True)
    kept = KeptStores(tmp_path / "frames", {"config": cfg, "code": code})
    return extract_job(entries, stores, records, cfg, kept), stores


def test_a_rerun_job_keeps_the_stores_of_unchanged_videos_bitwise(tmp_path):
    vids = tmp_path / "vids"
    for i in range(3):
        write_video(vids / f"patient_{i}_1.mp4", fan_frames(6, seed=10 + i))
    labels = tmp_path / "labels.csv"
    labels.write_text("video,score\n" + "".join(f"patient_{i}_1.mp4,{i}\n" for i in range(3)))
    cfg = make_config([vids], labels)
    entries = build_video_table(cfg["dataset"], cfg["classes"])
    first, stores = _kept_job(tmp_path, cfg, entries)
    assert first == {"extracted": [e.video for e in entries], "kept": []}
    before = {s.name: (s.stat().st_ino, s.read_bytes()) for s in stores}
    # one video changes (new content), the job runs again: that store only is written anew
    write_video(vids / "patient_1_1.mp4", fan_frames(6, seed=99))
    entries = build_video_table(cfg["dataset"], cfg["classes"])
    again, stores = _kept_job(tmp_path, cfg, entries)
    assert again == {"extracted": ["patient_1_1"], "kept": ["patient_0_1", "patient_2_1"]}
    for s in stores:
        same = (s.stat().st_ino, s.read_bytes()) == before[s.name]
        assert same == (s.name != "patient_1_1.h5"), s.name
        assert json.loads((s.with_suffix(".record.json")).read_text())["sha256"] == sha256_file(s)
    # other settings or other extraction code: nothing is kept
    cfg2 = {**cfg, "frames": {**cfg["frames"], "size": 40}}
    assert _kept_job(tmp_path, cfg2, entries)[0]["kept"] == []
    assert _kept_job(tmp_path, cfg, entries, code="v2")[0]["kept"] == []
    # one entry per video (the superseded ones are gone), and a video the run dropped goes too
    assert len(list((tmp_path / "frames" / ".kept").glob("*~patient_1_1.h5"))) == 1
    dropped = sorted(p.name for p in (tmp_path / "frames" / ".kept").glob("*~patient_2_1.*"))
    assert len(dropped) == 2  # its store and its record
    assert sorted(p.name for p in prune(tmp_path / "frames", {"patient_0_1", "patient_1_1"})) == dropped
    assert not list((tmp_path / "frames" / ".kept").glob("*~patient_2_1.*"))
