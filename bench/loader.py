"""Benchmark: training-step throughput fed by the HDF5 frame loader vs. from in-memory tensors.

Run from the repository root: `.venv/bin/python bench/loader.py [--backbone resnet18] ...`.
Builds its own temporary frame store (synthetic frames, the embedded config's size), then
interleaves single training steps (same model, batch size and augmentation) fed by
`DataLoader(FrameDataset)` (reading HDF5 in the step's time when num_workers = 0) and by indexing
a preloaded uint8 tensor, so both see the same load on a shared machine. Reports the median of the
per-pair throughput ratios (and the ratio of totals). The last line is one JSON object; goal
ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fixtures_frames import make_frame_store, small_config  # noqa: E402

from lus_core.cnn.augment import Augment  # noqa: E402
from lus_core.cnn.backbones import build_model  # noqa: E402
from lus_core.cnn.frame_dataset import FrameDataset, frames_to_tensor, prepare_batch  # noqa: E402
from lus_core.frames.store import FrameReader, read_frame_index  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="scratch", help="a light model makes the loader's share larger")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=16, help="interleaved (loader, in-memory) step pairs")
    ap.add_argument(
        "--num-workers", type=int, default=None,
        help="DataLoader workers (default: 0 on CPU, where they would compete with the model for the cores; 8 on CUDA)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.num_workers is None:
        args.num_workers = min(8, os.cpu_count() or 1) if cuda else 0
    goal = 0.9

    with tempfile.TemporaryDirectory(prefix="lus_bench_loader_") as tmp:
        root = Path(tmp)
        n_frames_needed = args.batch_size * (args.pairs + 2)
        fpv = max(8, -(-n_frames_needed // 32))  # 8 patients x 4 videos
        csv = make_frame_store(root, n_patients=8, frames_per_video=fpv, size=args.image_size, seed=0)
        index = read_frame_index(csv)
        print(f"store: {len(index)} frames of {args.image_size} px in {index['video'].nunique()} HDF5 files", file=sys.stderr)

        torch.manual_seed(0)
        model = build_model(args.backbone, 4, "none").to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        crit = torch.nn.CrossEntropyLoss()
        augment = Augment(small_config()["train"]["augment"])
        gen = torch.Generator().manual_seed(0)
        amp = torch.bfloat16 if cuda else None

        def step(xb, yb):
            x = prepare_batch(xb, device, augment, gen, channels_last=cuda)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(x)
            loss = crit(logits.float(), yb.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def sync():
            if cuda:
                torch.cuda.synchronize()

        ds = FrameDataset(index, args.image_size)
        loader = DataLoader(
            ds, args.batch_size, shuffle=True, drop_last=True, num_workers=args.num_workers, pin_memory=cuda,
            persistent_workers=args.num_workers > 0, generator=torch.Generator().manual_seed(1),
        )
        mem_x = frames_to_tensor(FrameReader(index).frames(range(len(index))), args.image_size)
        mem_y = torch.as_tensor(index["label"].to_numpy())
        if cuda:
            mem_x, mem_y = mem_x.pin_memory(), mem_y.pin_memory()
        perm_gen = torch.Generator().manual_seed(2)

        loader_batches = _cycle(loader)

        def timed_step(source):
            sync()
            t0 = time.perf_counter()
            if source == "loader":
                xb, yb, _ = next(loader_batches)
            else:
                idx = torch.randint(len(mem_y), (args.batch_size,), generator=perm_gen)
                xb, yb = mem_x[idx], mem_y[idx]
            step(xb, yb)
            sync()
            return time.perf_counter() - t0

        for source in ("memory", "loader", "memory", "loader"):  # warm-up (allocator, kernel choice)
            timed_step(source)
        # interleave single steps so both sources see the same machine load (shared CPUs)
        times = {"loader": [], "memory": []}
        for i in range(args.pairs):
            order = ("loader", "memory") if i % 2 == 0 else ("memory", "loader")
            for source in order:
                times[source].append(timed_step(source))
        print(
            f"median step: loader {statistics.median(times['loader']) * 1e3:.1f} ms, "
            f"in-memory {statistics.median(times['memory']) * 1e3:.1f} ms",
            file=sys.stderr,
        )
        t0 = time.perf_counter()
        for _ in range(4):
            next(loader_batches)
        fetch_ms = (time.perf_counter() - t0) / 4 * 1e3
        ds.close()

    loader_rate = args.batch_size * len(times["loader"]) / sum(times["loader"])
    memory_rate = args.batch_size * len(times["memory"]) / sum(times["memory"])
    # median of the per-pair ratios: robust to load spikes that hit one step of a pair
    ratio = statistics.median(m / lo for lo, m in zip(times["loader"], times["memory"], strict=True))
    record({
                "bench": "loader",
                "ratio_vs_in_memory": round(ratio, 3),
                "goal_ratio": goal,
                "met": ratio >= goal,
                "ratio_of_totals": round(loader_rate / memory_rate, 3),
                "loader_fetch_ms_per_batch": round(fetch_ms, 2),
                "loader_img_per_s": round(loader_rate, 1),
                "in_memory_img_per_s": round(memory_rate, 1),
                "backbone": args.backbone,
                "image_size": args.image_size,
                "batch_size": args.batch_size,
                "num_workers": args.num_workers,
                "device": str(device),
                "threads": args.threads,
            })


if __name__ == "__main__":
    main()
