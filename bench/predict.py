"""Frames per second of `lus predict`'s scoring path (decode, crop, CNN, confidence model,
similarity search, fallback) against plain inference of the same model on the same frames
(decode, crop, CNN only), measured in the same run. Goal: ratio >= 0.8.

Uses the run in results/synthetic when it is complete, else runs configs/tiny.yaml first.
Gallery rendering (one PNG per untrusted frame, matplotlib) is timed separately.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lus_core.frame_store import FrameReader  # noqa: E402
from lus_core.inference import predict_frames  # noqa: E402
from lus_core.predict import Predictor, _write_galleries, choose_configuration  # noqa: E402

GOAL = 0.8


def finished_run(tmp: Path) -> Path:
    run = REPO / "results" / "synthetic"
    if (run / "manifest.json").exists():
        return run
    run = tmp / "tiny"
    snakemake = Path(sys.executable).with_name("snakemake")
    subprocess.run([str(snakemake), "--cores", "2", "--quiet", "--configfile", "configs/tiny.yaml",
                    "--config", f"results={run}"], cwd=REPO, check=True)
    return run


def best_of(n, fn):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        run = finished_run(Path(tmp))
        choice = choose_configuration(run, "best")
        if choice.row_type != "combined":  # measure the full path even if the CNN alone won
            import pandas as pd

            matrix = pd.read_csv(run / "eval" / "matrix.csv")
            choice = choose_configuration(run, matrix[matrix.row_type == "combined"].config_id.iloc[0])
        predictor = Predictor(run, choice, device="cpu")
        videos = sorted((run / "synthetic" / "videos").glob("*.mp4"))[:6]
        n_frames = sum(len(predictor.load_video(v)[0]) for v in videos)

        def plain():
            for v in videos:
                frames, _ = predictor.load_video(v)
                predict_frames(predictor.model, frames, predictor.image_size, "cpu")

        results = []

        def ours():
            results.clear()
            for v in videos:
                frames, numbers = predictor.load_video(v)
                results.append((frames, numbers, predictor.score(frames)))

        ours()  # warm-up (index pages, t-SNE)
        t_plain = best_of(3, plain)
        t_ours = best_of(3, ours)
        reader = FrameReader(predictor.frame_index)
        t = time.perf_counter()
        n_gallery = 0
        for i, (frames, numbers, res) in enumerate(results):
            _write_galleries(Path(tmp) / "g", f"v{i}", frames, numbers, res, predictor, reader)
            n_gallery += len(list((Path(tmp) / "g").glob(f"v{i}_*.png")))
        t_gallery = time.perf_counter() - t
    plain_fps, ours_fps = n_frames / t_plain, n_frames / t_ours
    ratio = ours_fps / plain_fps
    print(f"configuration {choice.config_id}: {n_frames} frames; plain {plain_fps:.0f} fps, predict {ours_fps:.0f} fps; "
          f"{n_gallery} galleries in {t_gallery:.1f} s")
    print(json.dumps({"bench": "predict", "configuration": choice.config_id, "frames": n_frames,
                      "plain_inference_fps": round(plain_fps, 1), "predict_fps": round(ours_fps, 1),
                      "ratio_vs_plain_inference": round(ratio, 3), "gallery_s_each": round(t_gallery / max(n_gallery, 1), 3),
                      "goal_ratio": GOAL, "met": bool(ratio >= GOAL)}))


if __name__ == "__main__":
    np.random.seed(0)
    main()
