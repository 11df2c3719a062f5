"""Benchmark: the exported ONNX scorer under onnxruntime against the same model in torch, per frame
on the CPU.

Run from the repository root: `.venv/bin/python bench/export.py [--run results/synthetic]`.
With `--run`, the run's deployed backbone (its `all` model, what `lus export` writes); without,
the default config's backbones (scratch and resnet18, config.yaml's image size, random weights:
the speed of a graph does not depend on its weights). Each model is exported, then single frames
(a scanner's stream: batch 1) and batches of 64 go through torch (`predict_frames`'s forward, the
workflow's inference) and through onnxruntime, interleaved so both see the same load; medians of
the per-pair ratios. Also the max softmax difference on the timed frames. The last line is one
JSON object; goals: onnxruntime at least as fast per frame as torch (ratio >= 1), softmax within 1e-4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lus_core.cnn.backbones import build_model  # noqa: E402
from lus_core.cnn.frame_dataset import prepare_batch  # noqa: E402
from lus_core.config import load_config  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402
from lus_core.runs.export import PARITY_TOLERANCE, DeployedScorer, export_onnx, onnx_session  # noqa: E402

GOAL_RATIO = 1.0


def models(run: Path | None):
    if run is not None:
        from lus_core.cnn.model_file import load_model
        from lus_core.runs.reader import FinishedRun

        finished = FinishedRun(run)
        backbone = finished.selected()["backbone"]
        model, meta = load_model(finished.verified(finished.layout.model(backbone, "all")))
        yield backbone, model, int(meta["image_size"])
        return
    config = load_config(REPO / "config.yaml")
    torch.manual_seed(0)
    for backbone in config["train"]["backbones"]:
        yield backbone, build_model(backbone, len(config["classes"])).eval(), config["train"]["image_size"]


def timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run: its deployed backbone")
    parser.add_argument("--repeats", type=int, default=60, help="timed pairs per batch size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone, model, size in models(args.run):
            path = Path(tmp) / f"{backbone}.onnx"
            export_onnx(DeployedScorer(model), size, path)
            session = onnx_session(path)

            def run_torch(x, model=model):
                with torch.inference_mode():
                    return torch.softmax(model.embed(prepare_batch(torch.from_numpy(x).expand(-1, 3, -1, -1), "cpu"))[0], 1)

            def run_onnx(x, session=session):
                return session.run(["softmax"], {"frames": x})[0]

            row = {"image_size": size}
            for batch in (1, 64):
                frames = rng.integers(0, 256, (batch, 1, size, size), dtype=np.uint8)
                run_torch(frames), run_onnx(frames)  # warm-up
                pairs = [(timed(run_torch, frames), timed(run_onnx, frames)) for _ in range(args.repeats)]
                row[f"batch{batch}_torch_ms_per_frame"] = round(1000 * statistics.median(t for t, _ in pairs) / batch, 3)
                row[f"batch{batch}_onnx_ms_per_frame"] = round(1000 * statistics.median(o for _, o in pairs) / batch, 3)
                row[f"batch{batch}_ratio"] = round(statistics.median(t / o for t, o in pairs), 3)
                diff = np.abs(run_torch(frames).numpy() - run_onnx(frames)).max()
                row["max_abs_softmax_difference"] = max(row.get("max_abs_softmax_difference", 0.0), float(diff))
            figures[backbone] = row
    worst = min(min(r["batch1_ratio"], r["batch64_ratio"]) for r in figures.values())
    parity = max(r["max_abs_softmax_difference"] for r in figures.values())
    record({"bench": "export", "backbones": figures, "threads": torch.get_num_threads(),
            "worst_ratio_torch_over_onnx": worst, "max_abs_softmax_difference": parity,
            "goal_ratio": GOAL_RATIO, "tolerance": PARITY_TOLERANCE,
            "met": bool(worst >= GOAL_RATIO and parity <= PARITY_TOLERANCE),
            "source": str(args.run) if args.run else "config.yaml backbones, random weights"})


if __name__ == "__main__":
    main()
