"""Frames per second of our extraction (decode + sector crop + resize + HDF5 write) against
plain OpenCV decoding of the same files, measured in the same run. Goal: ratio >= 0.8."""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lus_core.config import validate_config  # noqa: E402
from lus_core.extract import extract_video  # noqa: E402
from lus_core.ingest import build_video_table  # noqa: E402

BLUES = Path(os.environ.get("LUS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "covid-blues"
GOAL = 0.8


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
    from lus_core.synth import generate_dataset

    synth = {"n_patients": 6, "videos_per_patient": 3, "frames_per_video": 60, "size": 256, "fps": 10}
    labels = generate_dataset(tmp / "synth", synth, [0, 1, 2, 3], 0, progress=False)
    cfg = {"video_dirs": [str(labels.parent / "videos")], "labels": str(labels), "patient_from": "column"}
    return "synthetic", validate_config({"dataset": cfg, "frames": {"size": 112}}), 18


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name, cfg, n_videos = dataset(tmp)
        entries = build_video_table(cfg["dataset"], cfg["classes"])[:n_videos]
        paths = [e.path for e in entries]
        plain_decode(paths[:2])  # warm the page cache for both contestants
        best_plain, best_ours, frames = float("inf"), float("inf"), 0
        for rep in range(3):  # best of 3: the machine is shared and noisy
            t = time.perf_counter()
            frames = plain_decode(paths)
            best_plain = min(best_plain, time.perf_counter() - t)
            t = time.perf_counter()
            for e in entries:  # fresh outputs, as in a run (Snakemake removes old outputs first)
                extract_video(e, tmp / f"frames{rep}" / f"{e.video}.h5", cfg)
            best_ours = min(best_ours, time.perf_counter() - t)
    plain_fps, ours_fps = frames / best_plain, frames / best_ours
    ratio = ours_fps / plain_fps
    print(f"data: {name}, {frames} frames; plain OpenCV decode {plain_fps:.0f} fps, ours {ours_fps:.0f} fps")
    print(json.dumps({"bench": "extract", "data": name, "frames": frames, "plain_decode_fps": round(plain_fps, 1),
                      "extract_fps": round(ours_fps, 1), "ratio_vs_plain_decode": round(ratio, 3),
                      "goal_ratio": GOAL, "met": bool(ratio >= GOAL)}))


if __name__ == "__main__":
    main()
