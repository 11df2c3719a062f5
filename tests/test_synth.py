"""Tests of the synthetic LUS dataset generator (lus_core.synth).

A small cohort (12 patients x 3 videos x 6 frames at 96 px) is generated once per module and
read back through OpenCV exactly like a user's dataset would be.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from lus_core.config import validate_config
from lus_core.frames.decode import decode as decode_video
from lus_core.synth import artefacts
from lus_core.synth.cohort import plan_cohort, planned_videos, severity_of
from lus_core.synth.dataset import LABEL_COLUMNS, generate_dataset
from lus_core.synth.render import VideoRenderer, render_frame, render_video

CFG = {
    "enabled": True,
    "n_patients": 12,
    "videos_per_patient": 3,
    "frames_per_video": 6,
    "size": 96,
    "fps": 10,
    "colour_videos": 0,
}
CLASSES = [0, 1, 2, 3]
# dataset.synthetic with the schema's defaults (the only source of them)
SYNTH_DEFAULTS = validate_config({"dataset": {"synthetic": {"enabled": True}}})["dataset"]["synthetic"]


def synth(**keys) -> dict:
    """dataset.synthetic: the schema's defaults with `keys` changed."""
    return {**SYNTH_DEFAULTS, **keys}
SEED = 0
PATIENT_REGEX = re.compile(r"patient_(\w+?)_")  # config.yaml dataset.patient_regex


def read_labels(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        return list(reader)


def decode(path: Path) -> np.ndarray:
    """All frames of a video as uint8 (n, h, w) grayscale, as the frame-extraction step reads them."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.stack(frames)


def frame_labels(rows: list[dict], video: str, n: int) -> np.ndarray:
    out = np.full(n, -1)
    for r in rows:
        if r["video"] == video:
            out[int(r["start_frame"]) : int(r["end_frame"]) + 1] = CLASSES.index(int(r["score"]))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    labels = generate_dataset(out, CFG, CLASSES, SEED, progress=False)
    rows = read_labels(labels)
    videos = {name: decode(out / "videos" / name) for name, _ in planned_videos(CFG)}
    return out, labels, rows, videos


@pytest.fixture(scope="module")
def plans():
    return {p.name: p for p in plan_cohort(CFG, len(CLASSES), SEED)}


# --- files and labels ----------------------------------------------------------------------------
def test_writes_planned_videos_and_labels(dataset):
    out, labels, rows, _ = dataset
    assert labels == out / "labels.csv"
    planned = planned_videos(CFG)
    assert len(planned) == CFG["n_patients"] * CFG["videos_per_patient"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(name for name, _ in planned)
    assert {r["video"] for r in rows} == {name for name, _ in planned}
    for name, pid in planned:
        assert re.fullmatch(r"patient_P\d{2}_v\d+\.mp4", name)
        assert PATIENT_REGEX.match(name).group(1) == pid
    patient_of = dict(planned)
    assert all(r["patient"] == patient_of[r["video"]] for r in rows)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]  # no temp files


def test_videos_decode_to_planned_frames_and_size(dataset):
    out, _, _, videos = dataset
    for name, frames in videos.items():
        assert frames.shape == (CFG["frames_per_video"], CFG["size"], CFG["size"]), name
        cap = cv2.VideoCapture(str(out / "videos" / name))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == CFG["frames_per_video"]
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(CFG["fps"])
        cap.release()


def test_labels_cover_every_frame_once(dataset):
    _, _, rows, _ = dataset
    n = CFG["frames_per_video"]
    by_video = defaultdict(list)
    for r in rows:
        assert int(r["score"]) in CLASSES
        by_video[r["video"]].append((int(r["start_frame"]), int(r["end_frame"]), int(r["score"])))
    for video, runs in by_video.items():
        runs.sort()
        covered = np.zeros(n, int)
        for start, end, _ in runs:
            assert 0 <= start <= end < n, video
            covered[start : end + 1] += 1
        assert (covered == 1).all(), video
        assert len(runs) in (1, 2)
        if len(runs) == 2:  # a score change goes to a neighbouring score
            assert abs(CLASSES.index(runs[0][2]) - CLASSES.index(runs[1][2])) == 1


def test_labels_match_plan(dataset, plans):
    _, _, rows, _ = dataset
    for name, plan in plans.items():
        assert (frame_labels(rows, name, plan.n_frames) == plan.frame_labels()).all()


def test_finding_flags_follow_what_was_drawn(dataset, plans):
    """a_lines / b_lines of each label row: A-lines drawn visibly, three or more B-lines drawn
    (synth_meta.json's per-segment counts); both values occur, and B-lines rise with the score."""
    out, _, rows, _ = dataset
    meta = {v["name"]: v for v in json.loads((out / "synth_meta.json").read_text())["videos"]}
    by_score = {}
    for name, plan in plans.items():
        mine = [r for r in rows if r["video"] == name]
        renderer = VideoRenderer(plan)
        for r, found, count in zip(mine, renderer.findings, meta[name]["b_lines"], strict=True):
            assert r["b_lines"] == ("yes" if count >= 3 else "no")
            assert r["a_lines"] == ("yes" if found.a_line_amp > 0.2 else "no")
            by_score.setdefault(int(r["score"]), []).append(r["b_lines"] == "yes")
    assert {r["a_lines"] for r in rows} == {r["b_lines"] for r in rows} == {"yes", "no"}
    assert np.mean(by_score[min(by_score)]) < np.mean(by_score[max(by_score)])


def test_some_videos_change_score_and_patients_have_score_mixes():
    cohort = plan_cohort(synth(n_patients=100, videos_per_patient=3), 4, seed=3)
    changed = np.mean([len(p.segments) == 2 for p in cohort])
    assert 0.1 < changed < 0.3
    classes_of = defaultdict(list)
    for p in cohort:
        classes_of[p.patient].append(p.segments[0].class_index)
    means = np.array([np.mean(c) for c in classes_of.values()])
    assert means.std() > 0.6  # patients differ in how sick they are: a patient-wise split matters
    assert set(np.concatenate([p.frame_labels() for p in cohort])) == {0, 1, 2, 3}


# --- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_dataset_other_seed_different(tmp_path):
    cfg = synth(n_patients=4, videos_per_patient=2, frames_per_video=4, size=64, fps=10)
    runs = {}
    for run, seed in (("a", 11), ("b", 11), ("c", 12)):
        labels = generate_dataset(tmp_path / run, cfg, CLASSES, seed, progress=False)
        frames = {n: decode(tmp_path / run / "videos" / n) for n, _ in planned_videos(cfg)}
        runs[run] = (labels.read_text(), frames)
    assert runs["a"][0] == runs["b"][0]
    assert runs["a"][0] != runs["c"][0]
    for name, frames in runs["a"][1].items():
        assert np.array_equal(runs["b"][1][name], frames), name
        assert not np.array_equal(runs["c"][1][name], frames), name


def test_frames_independent_of_generation_order(plans):
    plan = plans["patient_P03_v2.mp4"]
    video = render_video(plan)
    assert video.dtype == np.uint8 and video.shape == (plan.n_frames, plan.size, plan.size)
    for t in (plan.n_frames - 1, 0, 3):  # any frame alone, in any order
        assert np.array_equal(render_frame(plan, t), video[t])
    # adding patients changes neither the existing patients' settings nor their file names
    bigger = plan_cohort({**CFG, "n_patients": CFG["n_patients"] + 4}, len(CLASSES), SEED)
    shared = [b for b in bigger if b.name in plans]
    assert len(shared) == len(plans)
    assert all(b.settings == plans[b.name].settings for b in shared)


# --- what the frames look like -------------------------------------------------------------------
def test_black_background_outside_fan(dataset, plans):
    _, _, _, videos = dataset
    for name, frames in videos.items():
        outside = ~plans[name].geometry().mask
        # a 2-pixel band along the fan edge may carry codec ringing; beyond it the frame is black
        far = cv2.erode(outside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert frames[:, far].mean() < 1.0, name
        assert frames[:, far].max() < 40, name
        for corner in (frames[:, :6, :6], frames[:, :6, -6:], frames[:, -6:, :6], frames[:, -6:, -6:]):
            assert corner.max() < 10, name
        assert frames[:, ~outside].mean() > 10, name  # and the fan itself is not


def to_polar(geometry, image: np.ndarray) -> np.ndarray:
    """Resample a rendered frame back onto the (n_depth, n_angle) polar grid (the inverse of the
    renderer's warp), to measure what a beam shows."""
    ax, ay = geometry.apex
    r = geometry.radius_of_row(np.arange(geometry.n_depth, dtype=np.float64))[:, None] * geometry.scale
    theta = geometry.angles()[None, :]
    map_x = (ax + r * np.sin(theta)).astype(np.float32)
    map_y = (ay + r * np.cos(theta)).astype(np.float32)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0.0)


def _severity_statistic(frame: np.ndarray, renderer: VideoRenderer) -> float:
    """Brightness of the lung deep below the pleura relative to the chest wall (gain-free).

    Per beam (polar column) the median over depth ignores thin horizontal A-lines but not
    B-lines (which span the whole depth) or white lung; averaged over the central beams.
    """
    polar = to_polar(renderer.geometry, frame)
    n_depth, n_angle = polar.shape
    pleura = float(renderer.layout.pleura_rows.mean())
    c0, c1 = int(0.3 * n_angle), int(0.7 * n_angle)
    wall = polar[int(0.3 * pleura) : int(0.85 * pleura), c0:c1].mean()
    deep = np.median(polar[int(1.3 * pleura) : int(0.95 * n_depth), c0:c1], axis=0).mean()
    return float(deep / (wall + 1))


def test_frames_carry_their_score_with_overlap(dataset, plans):
    _, _, rows, videos = dataset
    stats, labels = [], []
    for name, frames in videos.items():
        renderer = VideoRenderer(plans[name])
        for t, c in enumerate(frame_labels(rows, name, len(frames))):
            stats.append(_severity_statistic(frames[t], renderer))
            labels.append(c)
    stats, labels = np.array(stats), np.array(labels)
    rho = spearmanr(stats, labels)[0]
    assert rho > 0.5, rho
    medians = [np.median(stats[labels == c]) for c in range(len(CLASSES))]
    assert medians[-1] > medians[1] and medians[-1] > medians[0] and medians[2] > medians[0], medians
    # ... yet not perfectly separable: neighbouring scores overlap on the statistic
    ranges = [(stats[labels == c].min(), stats[labels == c].max()) for c in range(len(CLASSES))]
    overlaps = [ranges[c][1] > ranges[c + 1][0] for c in range(len(CLASSES) - 1)]
    assert sum(overlaps) >= 2, ranges


def test_frames_temporally_coherent(dataset):
    _, _, _, videos = dataset
    names = sorted(videos)
    within, across = [], []
    for i, name in enumerate(names):
        v = videos[name].reshape(len(videos[name]), -1).astype(np.float64)
        within += [np.corrcoef(v[t], v[t + 1])[0, 1] for t in range(len(v) - 1)]
        other = videos[names[(i + 5) % len(names)]].reshape(len(v), -1).astype(np.float64)
        across.append(np.corrcoef(v[0], other[0])[0, 1])
    assert np.mean(within) > 0.85
    assert np.min(within) > 0.5  # no frame is fresh noise
    assert np.mean(within) > np.mean(across) + 0.2


def test_per_patient_acquisition_settings_differ(dataset, plans):
    _, _, rows, videos = dataset
    settings = {p.patient: p.settings for p in plans.values()}
    assert len(set(settings.values())) == CFG["n_patients"]
    for p in plans.values():  # all videos of a patient share the patient's settings
        assert p.settings == settings[p.patient]
    # the same score looks different from patient to patient (gain, depth, probe width, ...)
    brightness = defaultdict(list)
    for name, frames in videos.items():
        plan = plans[name]
        mask = plan.geometry().mask
        for t, c in enumerate(frame_labels(rows, name, len(frames))):
            brightness[c, plan.patient].append(frames[t][mask].mean())
    spreads = []
    for c in range(len(CLASSES)):
        means = [np.mean(v) for (cc, _), v in brightness.items() if cc == c]
        if len(means) >= 3:
            spreads.append((max(means) - min(means)) / np.mean(means))
    assert spreads and max(spreads) > 0.2, spreads
    masks = {p.geometry().mask.sum() for p in plans.values()}
    assert len(masks) > CFG["n_patients"] // 2  # fan shapes differ between patients


def test_four_classes_give_the_clinical_scheme():
    a0, a1, a2, a3 = (artefacts.a_line_strength(severity_of(c, 4)) for c in range(4))
    assert a0 == 1 and a1 > 0 and a2 == a3 == 0  # A-lines: normal lung, fading by score 1
    rates = [artefacts.b_line_rate(severity_of(c, 4)) for c in range(4)]
    assert rates[0] < 0.5 and 1 < rates[1] < 4 and rates[2] > 4 and rates == sorted(rates)
    irregular = [artefacts.pleural_irregularity(severity_of(c, 4)) for c in range(4)]
    assert irregular[1] < 0.1 and irregular[2] > 0.9  # irregular pleura from score 2
    for curve in (artefacts.white_lung, artefacts.consolidation_probability):
        assert curve(severity_of(2, 4)) < 0.1 and curve(severity_of(3, 4)) > 0.9  # score 3 only
    # and the drawn findings follow: more B-lines with higher scores, consolidation only at 3
    cohort = plan_cohort(synth(n_patients=16, size=64, frames_per_video=2), 4, seed=2)
    counts, consolidated = defaultdict(list), defaultdict(list)
    for plan in cohort:
        renderer = VideoRenderer(plan)
        for seg, f in zip(plan.segments, renderer.findings, strict=True):
            counts[seg.class_index].append(f.n_b_lines)
            consolidated[seg.class_index].append(f.cons_mask.max() > 0.5)
    means = [np.mean(counts[c]) for c in range(4)]
    assert means[0] < means[1] < means[2], means
    assert not any(consolidated[0] + consolidated[1]) and np.mean(consolidated[3]) > 0.5


# --- other class lists and configs ---------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_any_number_of_ordered_classes(n_classes):
    cohort = plan_cohort(
        synth(n_patients=10, videos_per_patient=2, frames_per_video=4, size=64), n_classes, 1
    )
    seen = {s.class_index for p in cohort for s in p.segments}
    assert seen <= set(range(n_classes)) and {0, n_classes - 1} <= seen
    for p in cohort:
        for s in p.segments:
            assert 0.0 <= s.severity <= 1.0
    most = max(cohort, key=lambda p: p.segments[0].class_index)
    assert render_frame(most, 0).shape == (64, 64)


def test_class_values_written_as_given_and_stale_videos_removed(tmp_path):
    cfg = synth(n_patients=3, videos_per_patient=1, frames_per_video=3, size=64, fps=5)
    generate_dataset(tmp_path, cfg, ["normal", "severe"], seed=5, progress=False)
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 3
    (tmp_path / "videos" / "notes.txt").write_text("user file")
    labels = generate_dataset(
        tmp_path, {**cfg, "n_patients": 2}, ["normal", "severe"], seed=5, progress=False
    )
    rows = read_labels(labels)
    assert {r["score"] for r in rows} <= {"normal", "severe"}
    names = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert names == sorted([n for n, _ in planned_videos({**cfg, "n_patients": 2})] + ["notes.txt"])


def test_synth_never_replaces_or_removes_what_it_did_not_write(tmp_path):
    """A folder lus synth did not write (no synth_meta.json) is refused untouched, and so is its own
    folder once a user's video sits among its videos: the cohort's labels.csv would not list it."""
    cfg = synth(n_patients=2, videos_per_patient=1, frames_per_video=3, size=64, fps=5)
    user = tmp_path / "user"
    (user / "videos").mkdir(parents=True)
    (user / "videos" / "patient_P01_v1.mp4").write_bytes(b"a user's scan, named like a synthetic one")
    (user / "labels.csv").write_text("video,score\npatient_P01_v1.mp4,3\n")
    before = {p: p.read_bytes() for p in user.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="not written by lus synth"):
        generate_dataset(user, cfg, CLASSES, SEED, progress=False)
    assert {p: p.read_bytes() for p in user.rglob("*") if p.is_file()} == before

    ours = tmp_path / "ours"
    generate_dataset(ours, cfg, CLASSES, SEED, progress=False)
    (ours / "videos" / "my_scan.mp4").write_bytes(b"a user's scan")
    labels = (ours / "labels.csv").read_bytes()
    with pytest.raises(ValueError, match=r"did not write \(\['my_scan.mp4'\]\)"):
        generate_dataset(ours, {**cfg, "n_patients": 1}, CLASSES, SEED, progress=False)
    assert (ours / "labels.csv").read_bytes() == labels and len(list((ours / "videos").iterdir())) == 3
    (ours / "videos" / "my_scan.mp4").unlink()
    generate_dataset(ours, {**cfg, "n_patients": 1}, CLASSES, SEED, progress=False)  # its own: replaced
    assert sorted(p.name for p in (ours / "videos").iterdir()) == [n for n, _ in planned_videos({**cfg, "n_patients": 1})]


def test_planned_videos_needs_no_rendering_and_validates():
    assert planned_videos(synth(n_patients=2, videos_per_patient=2)) == [
        ("patient_P01_v1.mp4", "P01"),
        ("patient_P01_v2.mp4", "P01"),
        ("patient_P02_v1.mp4", "P02"),
        ("patient_P02_v2.mp4", "P02"),
    ]
    assert planned_videos(synth(n_patients=120, videos_per_patient=1))[0] == ("patient_P001_v1.mp4", "P001")
    with pytest.raises(ValueError):
        planned_videos(synth(size=97))
    with pytest.raises(ValueError):
        planned_videos(synth(n_patients=0))
    with pytest.raises(ValueError):
        plan_cohort(synth(), 1, 0)


def test_colour_videos_are_spread_over_the_cohort_and_decode_as_colour(tmp_path):
    """dataset.synthetic.colour_videos: that many videos (first and last included) show a colour
    Doppler box over the grey image, inside the fan; the others stay grey."""
    cfg = synth(n_patients=3, videos_per_patient=2, frames_per_video=4, size=96, colour_videos=2)
    plans = plan_cohort(cfg, 4, seed=1)
    assert [p.colour for p in plans] == [True, False, False, False, False, True]
    generate_dataset(tmp_path, cfg, CLASSES, seed=1, progress=False)
    for plan in plans:
        video = decode_video(tmp_path / "videos" / plan.name)
        assert video.frames.shape[-1] == (3 if plan.colour else 1), plan.name
    colour = decode_video(tmp_path / "videos" / plans[0].name).frames
    outside = ~plans[0].geometry().mask
    assert colour[:, outside].max() < 40  # the box is inside the fan: the crop does not move
    red = (colour[..., 0].astype(int) - colour[..., 2]) > 60
    assert red.any() and not red[:, outside].any()
