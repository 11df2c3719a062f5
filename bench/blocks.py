"""Benchmark: fine-tuning the last blocks on cached activations vs through the whole network.

Run from the repository root: `.venv/bin/python bench/blocks.py [--last-blocks 2] ...`.
Builds its own temporary frame store (synthetic LUS-like frames), then trains the last N blocks
and the output layer of an ImageNet encoder (`train.finetune: {last_blocks: N}`, no augmentation,
same frames, seed, batches, optimiser, loss and early stopping) twice with
`lus_core.cnn.train.run_train`:

- reference: the whole network runs on every batch of every epoch, its earlier blocks frozen
  (`train.embedding_cache: false`);
- cache: the frozen blocks' output computed once per frame (`lus_core.cnn.embedding_cache`, the
  `embed` step), then the last blocks train on it.

Both models must give equal predictions on the held-out frames (max |softmax difference| within
float tolerance). Prints the epoch-time speed-up (the reference's mean seconds per epoch over
the cache's, goal >= 3x) and, for the whole picture, the training speed-up with the one-off
encoding counted. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from fixtures_frames import make_frame_store, make_split, small_config  # noqa: E402
from training_pair import encode_all, held_out_agreement, train_both  # noqa: E402

from lus_core.frames.store import read_frame_index  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0"],
                    help="an encoder with offline ImageNet weights and blocks")
    ap.add_argument("--last-blocks", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--frames-per-video", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    goal = 3.0

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = make_frame_store(root, n_patients=args.patients, frames_per_video=args.frames_per_video,
                               size=args.image_size)
        make_split(csv, root / "split.json", n_test=2, k=3, seed=0)
        config = small_config(
            backbones=[args.backbone], weights="imagenet", finetune={"last_blocks": args.last_blocks},
            image_size=args.image_size, epochs=args.epochs, patience=args.epochs, batch_size=32, lr=0.001,
        )
        config["train"]["augment"] = {
            **config["train"]["augment"], "p_affine": 0, "p_multiply": 0, "p_blur": 0, "p_hflip": 0,
        }
        uncached = copy.deepcopy(config)
        uncached["train"]["embedding_cache"] = False
        index = read_frame_index(csv)

        caches, encode_s = encode_all(root / "activations", index, args.backbone, config)

        trained = train_both(root, csv, args.backbone, {"reference": (uncached, None), "cache": (config, caches)})
        max_diff, same_argmax = held_out_agreement(root, index, trained, args.image_size)
        seconds = {name: t["seconds"] for name, t in trained.items()}
        epoch_s = {name: t["epoch_s"] for name, t in trained.items()}

    speedup = epoch_s["reference"] / epoch_s["cache"]
    speedup_with_encoding = seconds["reference"] / (seconds["cache"] + encode_s)
    tolerance = 1e-4
    record({
                "bench": "blocks",
                "epoch_speedup": round(speedup, 1),
                "goal_speedup": goal,
                "speedup_with_one_off_encoding": round(speedup_with_encoding, 2),
                "max_abs_softmax_difference": max_diff,
                "tolerance": tolerance,
                "same_argmax_fraction": same_argmax,
                "met": bool(speedup >= goal and max_diff <= tolerance),
                "reference_epoch_s": round(epoch_s["reference"], 3),
                "cache_epoch_s": round(epoch_s["cache"], 3),
                "reference_train_s": round(seconds["reference"], 2),
                "cache_train_s": round(seconds["cache"], 2),
                "encode_once_s": round(encode_s, 2),
                "backbone": args.backbone,
                "last_blocks": args.last_blocks,
                "image_size": args.image_size,
                "n_frames": int(len(index)),
                "epochs": args.epochs,
                "threads": args.threads,
            })


if __name__ == "__main__":
    main()
