"""DICOM input: cine loops and single-frame series read like any video (the same stores as the same
frames in a lossless video), the sector from the ultrasound regions, broken files named, and no
identity of a DICOM header in anything the workflow or `lus predict` writes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import stat
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from lus_core.config import validate_config
from lus_core.frames.decode import VideoError, decode
from lus_core.frames.extract import extract_video
from lus_core.frames.identity import SALT_FILE, IdentityError, results_salt
from lus_core.frames.labels import DatasetError, VideoEntry, build_video_table
from tests.dicom_helpers import MARKERS, UID_ROOT, colour_fan, uid, write_dicom, write_series
from tests.video_helpers import fan_frames, write_video

SALT = b"a test salt of enough characters"


def config(**frames):
    return validate_config({"dataset": {"video_dirs": ["."], "labels": "labels.csv"},
                            "frames": {"size": 48, **frames}})


def store_of(path: Path, out: Path, cfg=None, source: str = "") -> tuple[np.ndarray, dict]:
    """Extract one video into a store; its frames and attributes."""
    entry = VideoEntry(out.stem, str(path), "P1", [(0, None, 1)], source=source)
    extract_video(entry, out, cfg or config())
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
        if "crop_box" in attrs:
            attrs["crop_box"] = json.loads(attrs["crop_box"])
        return f["frames"][()], attrs


def lossless_video(tmp_path: Path, frames: np.ndarray) -> Path:
    """The same frames in a lossless FFV1 video (OpenCV writes BGR)."""
    bgr = frames[..., ::-1] if frames.ndim == 4 else frames
    return write_video(tmp_path / "reference.mkv", np.ascontiguousarray(bgr), fourcc="FFV1")


GREY, COLOUR = fan_frames(8), colour_fan(8)


@pytest.mark.parametrize("case, frames, kw", [
    ("monochrome2", GREY, {}),
    ("monochrome1", GREY, {"photometric": "MONOCHROME1"}),
    ("rgb", COLOUR, {"photometric": "RGB"}),
    ("rle_rgb", COLOUR, {"photometric": "RGB", "syntax": RLELossless}),
    ("jpeg2000_lossless_grey", GREY, {"syntax": JPEG2000Lossless}),
    ("jpeg2000_lossless_rgb", COLOUR, {"photometric": "RGB", "syntax": JPEG2000Lossless}),
])
def test_lossless_dicom_gives_the_store_of_the_same_frames_in_a_lossless_video(tmp_path, case, frames, kw):
    dicom_frames, dicom_attrs = store_of(write_dicom(tmp_path / f"{case}.dcm", frames, **kw), tmp_path / "d.h5")
    video_frames, video_attrs = store_of(lossless_video(tmp_path, frames), tmp_path / "v.h5")
    assert dicom_frames.shape == video_frames.shape and dicom_frames.shape[-1] == (3 if frames.ndim == 4 else 1)
    np.testing.assert_array_equal(dicom_frames, video_frames)
    assert dicom_attrs["crop_box"] == video_attrs["crop_box"]
    assert dicom_attrs["fps"] == pytest.approx(10.0)  # FrameTime 100 ms
    assert dicom_attrs["n_declared_frames"] == dicom_attrs["n_source_frames"] == 8
    assert dicom_attrs["crop_source"] == "auto" and dicom_attrs["device"] == "TestVendor Probe 3000"


def test_a_single_frame_series_is_one_video_in_instance_number_order(tmp_path):
    # file names out of frame order: InstanceNumber decides
    series = write_series(tmp_path / "series", GREY)
    frames, attrs = store_of(series, tmp_path / "s.h5")
    reference, _ = store_of(lossless_video(tmp_path, GREY), tmp_path / "v.h5")
    np.testing.assert_array_equal(frames, reference)
    np.testing.assert_array_equal(decode(series).frame_numbers, np.arange(8))


def _ybr_reference(frames: np.ndarray) -> np.ndarray:
    """RGB -> YBR_FULL -> RGB by the equations of PS3.3 C.7.6.3.1.2 (8 bits, rounded), independent of pydicom."""
    rgb = frames.astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    cb = -0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128
    cr = 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2] + 128
    y, cb, cr = (np.clip(np.round(c), 0, 255) for c in (y, cb, cr))
    back = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                     y + 1.772 * (cb - 128)], axis=-1)
    return np.clip(np.round(back), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("photometric, syntax, max_diff, mean_diff", [
    ("YBR_FULL", None, 2, 0.1),
    ("YBR_FULL_422", None, 40, 0.5),  # chroma halved horizontally: the colour box's edges blur
    ("RGB", JPEGBaseline8Bit, 80, 2.0),  # baseline JPEG (YBR_FULL_422 in the file): lossy
])
def test_ybr_and_jpeg_frames_become_the_rgb_frames(tmp_path, photometric, syntax, max_diff, mean_diff):
    path = write_dicom(tmp_path / "c.dcm", COLOUR, photometric=photometric, syntax=syntax)
    video = decode(path)
    assert video.frames.shape == COLOUR.shape  # colour kept, RGB order
    reference = _ybr_reference(COLOUR) if photometric == "YBR_FULL" else COLOUR
    diff = np.abs(video.frames.astype(int) - reference.astype(int))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff
    box = (slice(None), slice(42, 58), slice(54, 76))  # inside the red box: a swapped order would be blue
    assert video.frames[box + (0,)].mean() > 150 > video.frames[box + (2,)].mean()


def test_sixteen_bit_frames_are_scaled_to_eight(tmp_path):
    path = write_dicom(tmp_path / "g.dcm", GREY)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = (GREY.astype(np.uint16) << 4).tobytes()  # 12-bit values
    ds.save_as(path)
    np.testing.assert_array_equal(decode(path).frames[..., 0], GREY)


@pytest.mark.parametrize("header, fps", [
    ({"frame_time_ms": 40.0}, 25.0),
    ({"frame_time_ms": None, "cine_rate": 30}, 30.0),
    ({"frame_time_ms": None, "display_rate": 15}, 15.0),
    ({"frame_time_ms": None}, 0.0),
])
def test_the_frame_rate_comes_from_the_header(tmp_path, header, fps):
    assert decode(write_dicom(tmp_path / "f.dcm", GREY, **header)).fps == pytest.approx(fps)


def test_the_ultrasound_regions_give_the_crop(tmp_path):
    # a tissue region, a colour-flow region inside it, and a 1D (M-mode) region: the tissue one is the crop
    regions = [{"x0": 20, "y0": 10, "x1": 107, "y1": 80},
               {"x0": 40, "y0": 30, "x1": 60, "y1": 50, "data_type": 2},
               {"x0": 0, "y0": 80, "x1": 127, "y1": 95, "spatial_format": 2}]
    frames, attrs = store_of(write_dicom(tmp_path / "r.dcm", GREY, regions=regions), tmp_path / "r.h5")
    assert attrs["crop_box"] == [20, 10, 108, 81] and attrs["crop_source"] == "dicom_regions"
    _, auto = store_of(write_dicom(tmp_path / "a.dcm", GREY), tmp_path / "a.h5")
    assert auto["crop_box"] != [20, 10, 108, 81] and auto["crop_source"] == "auto"
    # frames.crop: none keeps the whole frame, regions or not
    _, whole = store_of(tmp_path / "r.dcm", tmp_path / "n.h5", config(crop="none"))
    assert whole["crop_box"] == [0, 0, 128, 96] and whole["crop_source"] == "none"


def test_broken_files_are_named_in_the_error(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
    with pytest.raises(VideoError, match="garbage.dcm"):
        decode(garbage)
    truncated = write_dicom(tmp_path / "truncated.dcm", GREY)
    truncated.write_bytes(truncated.read_bytes()[: -GREY[0].size * 5])
    with pytest.raises(VideoError, match=r"truncated\.dcm: .*pixel data"):
        decode(truncated)
    # with on_bad_video: skip, the store says why, naming the file
    cfg = validate_config({"dataset": {"video_dirs": ["."], "labels": "l.csv", "on_bad_video": "skip"}})
    entry = VideoEntry("truncated", str(truncated), "P1", [(0, None, 1)])
    extract_video(entry, tmp_path / "t.h5", cfg)
    with h5py.File(tmp_path / "t.h5") as f:
        assert "truncated.dcm" in f.attrs["skipped"]


def test_a_series_folder_holds_one_series_of_single_frames(tmp_path):
    mixed = write_series(tmp_path / "mixed", GREY[:3])
    write_dicom(mixed / "IM9999.dcm", GREY)  # a multi-frame file among the single frames
    with pytest.raises(VideoError, match="IM9999.dcm: a multi-frame file inside a series folder"):
        decode(mixed)
    two = write_series(tmp_path / "two", GREY[:2])
    write_series(two, GREY[:1], series=2, names=["other.dcm"])
    with pytest.raises(VideoError, match="2 different series") as err:
        decode(two)
    assert UID_ROOT not in str(err.value)  # the UIDs are never printed


def test_burned_in_annotation_is_recorded_and_warned(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        _, attrs = store_of(write_dicom(tmp_path / "b.dcm", GREY, burned_in="YES"), tmp_path / "b.h5")
    assert attrs["burned_in_annotation"] == "YES"
    assert "BurnedInAnnotation is YES" in caplog.text
    _, attrs = store_of(write_dicom(tmp_path / "n.dcm", GREY, burned_in=None), tmp_path / "n.h5")
    assert attrs["burned_in_annotation"] == ""


# ---------------------------------------------------------------- identities


def _hmac_pseudonym(raw: str, salt: bytes) -> str:
    return "p" + hmac.new(salt, raw.encode(), hashlib.sha256).hexdigest()[:16]


def _dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of a multi-frame file, a series and a file named after its SOPInstanceUID."""
    videos = tmp_path / "videos"
    write_dicom(videos / "exam1.dcm", GREY, patient_id="MRN-A", study=1)
    write_series(videos / "exam2", GREY, patient_id="MRN-B", study=2)
    named = write_dicom(videos / f"{uid(3, 1, 1)}.dcm", GREY, patient_id="MRN-A", study=3)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"video": ["exam1.dcm", "exam2", named.name], "score": [0, 1, 2]}).to_csv(labels, index=False)
    return videos, labels


def _dicom_config(videos, labels, **dataset):
    return validate_config({"dataset": {"video_dirs": [str(videos)], "labels": str(labels),
                                        "patient_from": "dicom", **dataset}})


def test_dicom_patients_are_salted_hashes_and_identifying_names_neutral(tmp_path):
    videos, labels = _dataset(tmp_path)
    cfg = _dicom_config(videos, labels)
    entries = {e.path: e for e in build_video_table(cfg["dataset"], cfg["classes"], salt=SALT)}
    by_name = {Path(p).name: e for p, e in entries.items()}
    assert by_name["exam1.dcm"].patient == _hmac_pseudonym("MRN-A", SALT)
    assert by_name["exam2"].patient == _hmac_pseudonym("MRN-B", SALT)
    named = by_name[f"{uid(3, 1, 1)}.dcm"]
    assert named.patient == by_name["exam1.dcm"].patient  # one person's files: one patient
    assert named.video.startswith("dicom-") and UID_ROOT not in named.video + named.source
    assert named.source == named.video + ".dcm" and named.ranges == [(0, None, 2)]
    assert (by_name["exam1.dcm"].video, by_name["exam1.dcm"].source) == ("exam1", "exam1.dcm")
    # the same salt gives the same pseudonyms and names; another salt other ones
    again = build_video_table(cfg["dataset"], cfg["classes"], salt=SALT)
    assert [(e.video, e.patient) for e in again] == sorted((e.video, e.patient) for e in entries.values())
    other = build_video_table(cfg["dataset"], cfg["classes"], salt=b"another salt, also long enough")
    assert not {e.patient for e in other} & {e.patient for e in again}
    # asked for raw ids, the raw ones
    raw = build_video_table(_dicom_config(videos, labels, raw_patient_ids=True)["dataset"], cfg["classes"], salt=SALT)
    assert sorted(e.patient for e in raw) == ["MRN-A", "MRN-A", "MRN-B"]


def test_every_patient_of_a_dataset_with_dicom_is_pseudonymised(tmp_path):
    videos, labels = _dataset(tmp_path)
    write_video(videos / "clip.mp4", GREY)
    table = pd.read_csv(labels)
    table["patient"] = ["MRN-A", "MRN-B", "MRN-A"]
    pd.concat([table, pd.DataFrame({"video": ["clip.mp4"], "score": [3], "patient": ["MRN-B"]})]).to_csv(labels, index=False)
    cfg = validate_config({"dataset": {"video_dirs": [str(videos)], "labels": str(labels), "patient_from": "column"}})
    entries = {Path(e.path).name: e for e in build_video_table(cfg["dataset"], cfg["classes"], salt=SALT)}
    assert entries["clip.mp4"].patient == entries["exam2"].patient == _hmac_pseudonym("MRN-B", SALT)
    # patient_from: dicom needs every video to be a DICOM file
    with pytest.raises(DatasetError, match="clip.mp4: dataset.patient_from is 'dicom'"):
        build_video_table(_dicom_config(videos, labels)["dataset"], cfg["classes"], salt=SALT)


def test_a_missing_patient_id_is_an_error_that_names_no_identity(tmp_path):
    videos = tmp_path / "videos"
    write_dicom(videos / "x.dcm", GREY, patient_id="")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"video": ["x.dcm"], "score": [0]}).to_csv(labels, index=False)
    cfg = _dicom_config(videos, labels)
    with pytest.raises(DatasetError, match="x.dcm: no PatientID"):
        build_video_table(cfg["dataset"], cfg["classes"], salt=SALT)


def test_the_salt_is_made_once_per_results_folder_and_kept_secret(tmp_path):
    results = tmp_path / "results"
    salt = results_salt(results)
    assert len(salt) == 64 and results_salt(results) == salt  # a rerun: the same salt
    assert stat.S_IMODE((results / SALT_FILE).stat().st_mode) == 0o600
    assert results_salt(tmp_path / "other") != salt
    shared = tmp_path / "site.salt"
    shared.write_text("a site-wide salt for two runs\n")
    assert results_salt(results, str(shared)) == b"a site-wide salt for two runs"
    with pytest.raises(IdentityError, match="missing.salt: salt file not found"):
        results_salt(results, str(tmp_path / "missing.salt"))
    shared.write_text("short")
    with pytest.raises(IdentityError, match="at least 16"):
        results_salt(results, str(shared))


def test_the_workflow_keeps_the_salt_in_the_results_folder(tmp_path):
    from lus_core.workflow.dag import video_table

    videos, labels = _dataset(tmp_path)
    cfg = _dicom_config(videos, labels)
    cfg["results"] = str(tmp_path / "results")
    first = video_table(cfg, "unused")
    assert (tmp_path / "results" / SALT_FILE).is_file()
    assert video_table(cfg, "unused") == first  # the next run: the same ids and pseudonyms
    assert all(v["patient"].startswith("p") and len(v["patient"]) == 17 for v in first.values())
    assert json.dumps(first).count("MRN-") == 0


# ---------------------------------------------------------------- the leak test: the whole workflow


def _archive(tmp_path: Path) -> tuple[Path, Path]:
    """The synthetic cohort as a hospital archive exports it: DICOM cine loops (one a single-frame
    series, one JPEG, one RLE, one with ultrasound regions, one with burned-in annotation) whose
    identifying tags all hold markers, neutral file names, a labels CSV without patients."""
    import cv2

    from lus_core.synth.dataset import generate_dataset

    synth = validate_config({"dataset": {"synthetic": {"enabled": True, "n_patients": 6, "videos_per_patient": 2,
                                                       "frames_per_video": 8, "size": 96, "colour_videos": 1}}})
    labels = generate_dataset(tmp_path / "synth", synth["dataset"]["synthetic"], synth["classes"], 7)
    table = pd.read_csv(labels, dtype={"patient": str})
    data = tmp_path / "archive"
    rows = []
    for k, (name, group) in enumerate(table.groupby("video", sort=True)):
        cap, frames = cv2.VideoCapture(str(labels.parent / "videos" / name)), []
        while (ok := cap.read())[0]:
            frames.append(ok[1][..., ::-1])  # RGB
        frames = np.stack(frames)
        colour = np.abs(frames.astype(int) - frames[..., :1]).max() > 30
        pixels = frames if colour else frames[..., 0]
        photometric = "RGB" if colour else "MONOCHROME2"
        patient = "MRNZQX" + group["patient"].iloc[0]
        target = f"exam{k:02d}" if k == 0 else f"exam{k:02d}.dcm"
        kw = {"patient_id": patient, "study": 10 + k, "series": 1}
        if k == 0:
            write_series(data / "videos" / target, pixels, photometric=photometric, **kw)
        else:
            extra = {1: {"syntax": JPEGBaseline8Bit}, 2: {"syntax": RLELossless}, 3: {"regions": [
                {"x0": 4, "y0": 2, "x1": 91, "y1": 93}]}, 4: {"burned_in": "YES"}}.get(k, {})
            write_dicom(data / "videos" / target, pixels, photometric=photometric, **kw, **extra)
        for _, r in group.iterrows():
            rows.append({"video": target, "score": r["score"], "start_frame": r["start_frame"],
                         "end_frame": r["end_frame"], "a_lines": r["a_lines"], "b_lines": r["b_lines"]})
    pd.DataFrame(rows).to_csv(data / "labels.csv", index=False)
    return data, data / "labels.csv"


def _markers() -> list[bytes]:
    values = set(MARKERS.values()) | {"MRNZQX", UID_ROOT.rstrip(".")}
    values |= {part for v in MARKERS.values() for part in v.split("^") if len(part) >= 5}
    return sorted(v.lower().encode() for v in values)


def _leaks(folder: Path, markers: list[bytes]) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes().lower()
        found += [f"{path}: {m.decode()}" for m in markers if m in data]
    return found


@pytest.mark.slow
def test_no_identity_of_a_dicom_header_reaches_any_output(tmp_path):
    from tests.workflow_helpers import REPO, lus, run_ok

    data, labels = _archive(tmp_path)
    cfg = tmp_path / "dicom.yaml"
    cfg.write_text(
        f"data_root: {data}\nseed: 7\n"
        "dataset:\n  synthetic: {enabled: false}\n  video_dirs: [videos]\n  labels: labels.csv\n  patient_from: dicom\n"
        "frames: {size: 32}\nsplit: {k_test: 2, n_folds: 2}\n"
        "train: {backbones: [scratch], image_size: 32, epochs: 1, batch_size: 16}\n"
        "confidence: {methods: [msp, mlp]}\n"
        "similarity: {spaces: [raw, embedding], k: [3], fallback: [mean], n_trees: 5}\n"
        "evaluate: {n_bootstrap: 20, n_gallery: 2}\n")
    work = tmp_path / "work"
    proc = run_ok("--cores", "2", "--configfile", str(REPO / "configs" / "tiny.yaml"), str(cfg),
                  "--config", "results=results", "--directory", str(work), timeout=1500)
    results = work / "results"
    # lus predict on a file named after its own SOPInstanceUID and on a series folder
    inputs = tmp_path / "new_exams"
    named = write_dicom(inputs / f"{uid(99, 1, 1)}.dcm", fan_frames(6, 96, 96), patient_id="MRNZQXNEW", study=99)
    write_series(inputs / "exam_new", fan_frames(6, 96, 96), patient_id="MRNZQXNEW", study=98)
    predicted = tmp_path / "predicted"
    res = lus("predict", named, inputs / "exam_new", "--run", results, "--out", predicted)
    assert res.returncode == 0, res.stderr
    videos = json.loads((predicted / "summary.json").read_text())["videos"]
    neutral = [v for v in videos if v.startswith("dicom-")]
    assert sorted(videos) == sorted(["exam_new", *neutral]) and len(neutral) == 1
    assert videos[neutral[0]]["source"] == neutral[0] + ".dcm"
    # every file of the working folder (results, logs, report, Snakemake's records), the predictions,
    # and what the workflow and lus predict printed: no marker, as raw bytes (HDF5 and PNG too)
    console = tmp_path / "console" / "output.txt"
    console.parent.mkdir()
    console.write_text(proc.stdout + proc.stderr + res.stdout + res.stderr)
    leaks = [leak for folder in (work, predicted, console.parent) for leak in _leaks(folder, _markers())]
    assert not leaks, "identities in the outputs:\n" + "\n".join(leaks[:20])
    # the patients are pseudonyms throughout, the salt stays in its file
    split = json.loads((results / "split.json").read_text())
    assert all(re.fullmatch(r"p[0-9a-f]{16}", p) for p in split["test_patients"] + split["train_patients"])
    salt = (results / ".patient_salt").read_text().strip().encode()
    assert not [p for p in work.rglob("*") if p.is_file() and p.name != ".patient_salt" and salt in p.read_bytes()]
    # the regions' crop and the burned-in annotation are recorded, and reported
    with h5py.File(results / "frames" / "exam03.h5") as f:
        assert f.attrs["crop_source"] == "dicom_regions" and json.loads(f.attrs["crop_box"]) == [4, 2, 92, 94]
    with h5py.File(results / "frames" / "exam04.h5") as f:
        assert f.attrs["burned_in_annotation"] == "YES"
    report = (results / "report" / "index.html").read_text()
    assert "Burned-in annotation (1)" in report and "exam04" in report
    card = (results / "report" / "model_card.md").read_text()
    assert "12 DICOM" in card and "1 of 12 cropped to the sector of their ultrasound regions; 1 declare" in card
