"""What a user of `lus predict` waits for: the whole command with galleries, per video, against
decoding + the CNN alone on the same videos (model loading included in both), measured in the
same run.  Goal: ratio_with_galleries = plain / with galleries >= 0.7.

The configuration is the run's selected one (the default of `lus predict`) when it falls back
on similar frames, else the first fallback configuration in --space (embedding, or tsne, which
adds placing the untrusted frames on the map), so the similarity search and the galleries are
exercised.  Videos: a few real
COVID-BLUES videos read in place when ../shared/data/covid-blues exists (or --videos), else the
run's own synthetic videos.  Run: the given --run, else results/synthetic when complete, else
configs/tiny.yaml is run first into a temporary folder.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lus_core.cnn.infer import predict_frames  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402
from lus_core.runs.predict import Predictor, choose_configuration, run_predict  # noqa: E402
from lus_core.runs.reader import FinishedRun  # noqa: E402

GOAL = 0.7
REAL_VIDEOS = REPO.parent / "shared" / "data" / "covid-blues" / "lus_videos"


def finished_run(tmp: Path, run: Path | None) -> Path:
    if run is not None:
        return run
    run = REPO / "results" / "synthetic"
    if (run / "manifest.json").exists():
        return run
    run = tmp / "tiny"
    snakemake = Path(sys.executable).with_name("snakemake")
    subprocess.run([str(snakemake), "--cores", "2", "--quiet", "--configfile", "configs/tiny.yaml",
                    "--directory", str(tmp / "wd"), "--snakefile", str(REPO / "Snakefile"),
                    "--config", f"results={run}"], cwd=REPO, check=True)
    return run


def fallback_configuration(run: Path, spaces, prefer_selected: bool = True) -> str:
    """The selected configuration when it falls back (and ``prefer_selected``); else a deployable
    row that falls back (combined first, else fallback only) in the first of ``spaces`` the
    matrix holds."""
    selected = json.loads((run / "eval" / "summary.json").read_text()).get("selected") or {}
    if prefer_selected and selected.get("row_type") in ("combined", "fallback_only"):
        return str(selected["config_id"])
    matrix = pd.read_csv(run / "eval" / "matrix.csv")
    for space in spaces:
        for row_type in ("combined", "fallback_only"):
            hits = matrix[(matrix.row_type == row_type) & (matrix.space == space)]
            if len(hits):
                return str(hits.config_id.iloc[0])
    raise SystemExit(f"{run}: no fallback configuration in the t-SNE or embedding space")


def selected_name(run: Path) -> str | None:
    return (json.loads((run / "eval" / "summary.json").read_text()).get("selected") or {}).get("config_id")


def best_of(n, fn):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="a finished run (default: results/synthetic or a tiny run)")
    parser.add_argument("--videos", type=Path, help="folder of videos (default: COVID-BLUES if present)")
    parser.add_argument("--n-videos", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--space", choices=["embedding", "tsne"], default="embedding",
                        help="similarity space of the configuration when the selected one does not fall back "
                             "(tsne adds placing the untrusted frames on the map)")
    parser.add_argument("--not-selected", action="store_true",
                        help="measure the --space configuration even when the selected one falls back")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = finished_run(tmp, args.run)
        folder = args.videos or (REAL_VIDEOS if REAL_VIDEOS.is_dir() else run / "synthetic" / "videos")
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".gif"))[: args.n_videos]
        name = fallback_configuration(run, [args.space, "tsne", "embedding"], not args.not_selected)
        finished = FinishedRun(run)
        predictor = Predictor(finished, choose_configuration(finished, name), device="cpu")
        n_frames = sum(len(predictor.load_video(v)[0]) for v in videos)

        def plain():  # what the CNN alone costs a user: load the model, decode, crop, infer
            from lus_core.cnn.model_file import load_model

            model, _ = load_model(run / "models" / predictor.choice.backbone / "all.pt", "cpu")
            for v in videos:
                frames, _ = predictor.load_video(v)
                predict_frames(model, frames, predictor.image_size, "cpu")

        def ours(galleries=True):
            # repeats replace what the previous call wrote (lus_core.runs.safe_output refuses otherwise)
            run_predict(videos, run, name, tmp / ("out" if galleries else "out_plain"), device="cpu",
                        galleries=galleries, overwrite=True)

        ours()  # warm-up (file cache, index pages)
        t_plain = best_of(args.repeats, plain)
        t_ours = best_of(args.repeats, ours)
        t_no_gallery = best_of(args.repeats, lambda: ours(False))
        t_plain = min(t_plain, best_of(args.repeats, plain))  # interleaved: load drifts on a shared machine
        summary = json.loads((tmp / "out" / "summary.json").read_text())
        n_untrusted = sum(v["untrusted_frames"] for v in summary["videos"].values())
        n_galleries = len(list((tmp / "out" / "galleries").glob("*.png")))
    ratio = t_plain / t_ours
    print(f"configuration {name}: {len(videos)} videos from {folder}, {n_frames} frames, {n_untrusted} untrusted; "
          f"decode + CNN {t_plain / len(videos):.2f} s/video, lus predict {t_ours / len(videos):.2f} s/video with "
          f"{n_galleries} galleries, {t_no_gallery / len(videos):.2f} s/video without")
    record({
        "bench": "predict", "configuration": name, "selected": name == selected_name(run), "videos": len(videos), "frames": n_frames,
        "untrusted_frames": n_untrusted, "galleries": n_galleries, "real_videos": folder != run / "synthetic" / "videos",
        "seconds_per_video": round(t_ours / len(videos), 3),
        "seconds_per_video_plain": round(t_plain / len(videos), 3),
        "seconds_per_video_no_galleries": round(t_no_gallery / len(videos), 3),
        "ratio_with_galleries": round(ratio, 3), "ratio_without_galleries": round(t_plain / t_no_gallery, 3),
        # with no untrusted frame no gallery is drawn: the ratio would not measure what a user waits for
        "goal_ratio": GOAL, "met": bool(ratio >= GOAL and n_galleries > 0),
    })


if __name__ == "__main__":
    np.random.seed(0)
    main()
