"""Tiny videos for tests: a bright fan-like blob on black that moves a little each frame."""

from pathlib import Path

import cv2
import numpy as np


def fan_frames(n=8, h=96, w=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        angle = np.arctan2(xx - w / 2, yy + 10)
        r = np.hypot(xx - w / 2, yy + 10)
        fan = (np.abs(angle) < 0.6) & (r > 20) & (r < h - 5)
        img = np.where(fan, 90 + 60 * np.sin(r / 6 + t) + rng.normal(0, 15, (h, w)), 0)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    writer.release()
    return path
