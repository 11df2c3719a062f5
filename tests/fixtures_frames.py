"""A tiny, class-dependent frame store for training / inference tests (no video decoding).

Each frame imitates a lung-ultrasound frame: a dark background with speckle noise, a bright
horizontal "pleural line" near the top, and as many bright vertical "B-lines" as the class index
(0..3), at random positions. Every patient has one video per class; patients differ in gain.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lus_core.config import validate_config
from lus_core.frames.store import build_frame_index, write_frame_index, write_video_store
from lus_core.io_utils import write_json

REPO = Path(__file__).resolve().parents[1]


def synth_frame(rng: np.random.Generator, label: int, size: int, gain: float) -> np.ndarray:
    img = rng.normal(30, 12, (size, size))
    y0 = max(1, size // 6)
    img[y0 : y0 + max(1, size // 16), :] += 120  # pleural line
    width = max(2, size // 12)
    xs = rng.choice(np.arange(width, size - 2 * width, width + 1), size=label, replace=False) if label else []
    for x in xs:
        fade = np.linspace(1.0, 0.6, size - y0)[:, None]
        img[y0:, x : x + width] += 140 * fade  # B-line from the pleura downwards
    return np.clip(img * gain, 0, 255).astype(np.uint8)


def make_frame_store(
    root: Path,
    n_patients: int = 12,
    frames_per_video: int = 10,
    size: int = 32,
    n_classes: int = 4,
    channels: int = 1,
    seed: int = 0,
    findings: bool = False,
) -> Path:
    """Write frames/{video}.h5 + frame_index.csv under `root`; return the index path.

    `findings`: the stores also hold the finding `b_lines` (two or more drawn: class >= 2),
    unknown (-1) for the first patient's videos."""
    rng = np.random.default_rng(seed)
    paths = []
    for p in range(n_patients):
        patient = f"p{p:02d}"
        gain = rng.uniform(0.8, 1.2)
        for label in range(n_classes):
            video = f"{patient}_v{label}"
            frames = np.stack([synth_frame(rng, label, size, gain) for _ in range(frames_per_video)])[..., None]
            if channels == 3:
                frames = np.repeat(frames, 3, axis=-1)
            path = root / "frames" / f"{video}.h5"
            value = -1 if p == 0 else int(label >= 2)
            write_video_store(
                path, frames, [label] * frames_per_video, range(frames_per_video), patient, video,
                {"size": size, "fps": 10, "crop_box": [0, 0, size, size], "source_path": "synthetic"},
                (["b_lines"], np.full((frames_per_video, 1), value)) if findings else None,
            )
            paths.append(path)
    index = build_frame_index(paths)
    csv = root / "frame_index.csv"
    write_frame_index(index, csv)
    return csv


def make_split(index_csv: Path, out: Path, n_test: int = 3, k: int = 3, seed: int = 0) -> dict:
    """A split.json in the contract's format: test patients and K folds over the rest."""
    patients = sorted(pd.read_csv(index_csv, dtype={"patient": str})["patient"].unique())
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(patients))
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    folds = []
    for i in range(k):
        val = sorted(train[i::k])
        folds.append({"fold": i, "val_patients": val, "train_patients": sorted(set(train) - set(val))})
    split = {"test_patients": test, "train_patients": train, "folds": folds, "k": k, "seed": seed, "method": "test"}
    write_json(out, split)
    return split


def small_config(**train) -> dict:
    """The embedded config.yaml with a small, fast `train` section (overridable), validated."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config = copy.deepcopy(config)
    config["classes"] = [0, 1, 2, 3]
    config["seed"] = 42
    config["train"].update(
        {
            "backbones": ["scratch"],
            "weights": "none",
            "finetune": "head",
            "image_size": 32,
            "epochs": 3,
            "batch_size": 32,
            "lr": 0.002,
            "weight_decay": 0.0001,
            "patience": 3,
            "class_balance": "weighted_loss",
            "num_workers": 0,
        }
    )
    config["train"].update(train)
    return validate_config(config)  # the schema's defaults, as every step receives them
