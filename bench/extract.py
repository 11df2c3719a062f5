"""Frames per second of our extraction (decode + sector crop + resize + HDF5 write) against
plain OpenCV decoding of the same files, measured in the same run. Goal: ratio >= 0.8.

Ours is what one extraction job does with its share of the videos (`extract_videos`: two videos
decoding at once on one FFmpeg thread each, each video cropped, compressed and written while the
next ones decode); `extract_fps_one_by_one` is the same work one video per call (no overlap, one
decoding thread). Plain decoding is `cv2.VideoCapture.read` on OpenCV's defaults (FFmpeg's
threads). Each contestant's best of REPEATS interleaved runs; the median of the runs' paired
ratios is printed too, since the machine's speed drifts.

Also the reader: training-style random access (shuffled batches through FrameReader) to the
stores just written against the same frames in the first store format (gzip, one chunk per
frame), and the bytes each takes on disk; reading should stay as fast (ratio >= 1 means faster).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lus_core.config import validate_config  # noqa: E402
from lus_core.frames.extract import extract_video, extract_videos  # noqa: E402
from lus_core.frames.labels import build_video_table  # noqa: E402
from lus_core.frames.store import FrameReader, build_frame_index  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402

BLUES = Path(os.environ.get("LUS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "covid-blues"
GOAL = 0.8
REPEATS = 5


def plain_decode(paths) -> int:
    n = 0
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
    return n


def dataset(tmp: Path):
    if BLUES.exists():
        cfg = {"video_dirs": [str(BLUES / "lus_videos")], "labels": str(BLUES / "severity.csv"),
               "label_columns": {"video": "video_file", "score": "Severity Score"},
               "patient_regex": r"patient_(\d+)_"}
        return "covid-blues (30 videos)", validate_config({"dataset": cfg, "frames": {"size": 112}}), 30
    from lus_core.synth.dataset import generate_dataset

    synth = {"n_patients": 6, "videos_per_patient": 3, "frames_per_video": 60, "size": 256, "fps": 10, "colour_videos": 0}
    labels = generate_dataset(tmp / "synth", synth, [0, 1, 2, 3], 0, progress=False)
    cfg = {"video_dirs": [str(labels.parent / "videos")], "labels": str(labels), "patient_from": "column"}
    return "synthetic", validate_config({"dataset": cfg, "frames": {"size": 112}}), 18


def as_format_1(store: Path, out: Path) -> Path:
    """The same store with its frames as the first format wrote them (gzip level 1, one chunk
    per frame), for the reading comparison."""
    with h5py.File(store, "r") as src, h5py.File(out, "w") as dst:
        frames = src["frames"][:]
        dst.create_dataset("frames", data=frames, chunks=(1, *frames.shape[1:]), compression="gzip", compression_opts=1)
        for name in ("label", "frame_index"):
            dst.create_dataset(name, data=src[name][:])
        dst.attrs.update(video_id=src.attrs["video_id"], patient=src.attrs["patient"])
    return out


def random_read_seconds(stores, batch: int = 32, n_batches: int = 60, seed: int = 0) -> tuple[float, int]:
    """Best of 3: shuffled mini-batches of frames, as a training epoch reads them."""
    reader = FrameReader(build_frame_index(stores))
    order = np.random.default_rng(seed).permutation(len(reader))[: batch * n_batches]
    best = float("inf")
    for _ in range(3):
        reader.reset()
        t = time.perf_counter()
        for k in range(0, len(order), batch):
            reader.frames(order[k : k + batch])
        best = min(best, time.perf_counter() - t)
    return best, len(order)


def compare_readers(new_stores, tmp: Path) -> dict:
    old_dir = tmp / "format1"
    old_dir.mkdir()
    old_stores = [as_format_1(p, old_dir / p.name) for p in new_stores]
    new_s, n = random_read_seconds(new_stores)
    old_s, _ = random_read_seconds(old_stores)
    new_bytes, old_bytes = (sum(p.stat().st_size for p in ps) for ps in (new_stores, old_stores))
    print(f"reading {n} random frames: this format {n / new_s:.0f} fps, gzip format {n / old_s:.0f} fps; "
          f"on disk {new_bytes / 1e6:.1f} MB vs {old_bytes / 1e6:.1f} MB")
    return {"read_fps": round(n / new_s, 1), "read_fps_gzip_format": round(n / old_s, 1),
            "read_ratio_vs_gzip_format": round(old_s / new_s, 3), "store_mb": round(new_bytes / 1e6, 2),
            "store_mb_gzip_format": round(old_bytes / 1e6, 2)}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name, cfg, n_videos = dataset(tmp)
        entries = build_video_table(cfg["dataset"], cfg["classes"])[:n_videos]
        paths = [e.path for e in entries]
        plain_decode(paths[:2])  # warm the page cache for both contestants
        best_plain, best_ours, frames = float("inf"), float("inf"), 0
        cpu_plain, cpu_ours = float("inf"), float("inf")  # CPU seconds: what a loaded machine shares out
        best_single = float("inf")
        paired = []  # ours against the plain decoding just before it
        for rep in range(REPEATS):  # best of each: the machine is shared and noisy
            t, c = time.perf_counter(), time.process_time()
            frames = plain_decode(paths)
            plain_s = time.perf_counter() - t
            best_plain, cpu_plain = min(best_plain, plain_s), min(cpu_plain, time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            # fresh outputs, as in a run (Snakemake removes old outputs first)
            extract_videos(entries, [tmp / f"frames{rep}" / f"{e.video}.h5" for e in entries], cfg)
            ours_s = time.perf_counter() - t
            best_ours, cpu_ours = min(best_ours, ours_s), min(cpu_ours, time.process_time() - c)
            paired.append(plain_s / ours_s)
            t = time.perf_counter()
            for e in entries:
                extract_video(e, tmp / f"single{rep}" / f"{e.video}.h5", cfg)
            best_single = min(best_single, time.perf_counter() - t)
        reading = compare_readers(sorted((tmp / "frames0").glob("*.h5")), tmp)
    plain_fps, ours_fps = frames / best_plain, frames / best_ours
    ratio = ours_fps / plain_fps
    print(f"data: {name}, {frames} frames; plain OpenCV decode {plain_fps:.0f} fps, ours {ours_fps:.0f} fps")
    record({"bench": "extract", "data": name, "frames": frames, "plain_decode_fps": round(plain_fps, 1),
                      "extract_fps": round(ours_fps, 1), "ratio_vs_plain_decode": round(ratio, 3),
                      "extract_fps_one_by_one": round(frames / best_single, 1),
                      "ratio_median_of_runs": round(float(np.median(paired)), 3),
                      "ratio_each_run": [round(r, 3) for r in paired],
                      "ratio_one_by_one": round(best_plain / best_single, 3),
                      "cpu_time_ratio_vs_plain_decode": round(cpu_plain / cpu_ours, 3),
                      **reading, "goal_ratio": GOAL, "met": bool(ratio >= GOAL)})


if __name__ == "__main__":
    main()
