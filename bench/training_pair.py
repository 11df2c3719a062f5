"""What bench/heads.py and bench/blocks.py share: one model trained two ways on the same frames,
timed, and compared on the held-out patients' frames."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from lus_core.cnn.embedding_cache import encode_video
from lus_core.cnn.infer import predict_index
from lus_core.cnn.model_file import load_model
from lus_core.cnn.train import run_train
from lus_core.io_utils import read_json


def encode_all(folder: Path, index: pd.DataFrame, backbone: str, config: dict) -> tuple[dict, float]:
    """Every video's cache file under `folder` (the embed step's work); (video -> path, seconds)."""
    t0 = time.perf_counter()
    caches = {}
    for video, h5 in index.groupby("video")["h5"].first().items():
        caches[video] = folder / f"{video}.h5"
        encode_video(h5, caches[video], backbone, config)
    return caches, time.perf_counter() - t0


def train_both(root: Path, csv: Path, backbone: str, ways: dict[str, tuple[dict, dict | None]]) -> dict:
    """Train the `all` model once per way (name -> (config, cache paths or None)); per way its
    model file, wall seconds and mean seconds per epoch."""
    out = {}
    for name, (config, caches) in ways.items():
        model = root / f"{name}.pt"
        t0 = time.perf_counter()
        run_train(csv, root / "split.json", backbone, "all", model, root / f"{name}.csv", root / f"{name}.png",
                  root / "ck" / name, config, progress=False, cache_paths=caches)
        out[name] = {"model": model, "seconds": time.perf_counter() - t0,
                     "epoch_s": float(pd.read_csv(root / f"{name}.csv")["seconds"].mean())}
    return out


def held_out_agreement(root: Path, index: pd.DataFrame, trained: dict, image_size: int) -> tuple[float, float]:
    """(max |softmax difference|, fraction of equal argmax) of the two models on the test frames,
    each run whole on the frames."""
    test = index[index["patient"].isin(read_json(root / "split.json")["test_patients"])]
    a, b = (predict_index(load_model(t["model"])[0], test, image_size)[1] for t in trained.values())
    return float(np.abs(a - b).max()), float((a.argmax(1) == b.argmax(1)).mean())
