"""Decode LUS videos (any OpenCV container, GIF, or a folder of PNG/JPEG frames), find the
ultrasound sector and crop/resize frames to a fixed square size."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".m4v", ".wmv"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}


class VideoError(ValueError):
    """A video cannot be used; the message names the file and the problem."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 (N, H, W, C) with C = 1 (grayscale) or 3 (RGB)
    frame_numbers: np.ndarray  # source frame number of each kept frame
    fps: float
    n_source_frames: int
    original_size: tuple[int, int]  # (h, w)


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def decode(path: str | Path, stride: int = 1, max_frames: int = 0) -> DecodedVideo:
    """Decode every `stride`-th frame (then at most `max_frames`, evenly spaced)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    frames, numbers, fps = (_decode_folder if path.is_dir() else _decode_container)(path, stride)
    n_source = (numbers[-1] + 1) if numbers else 0
    if not frames:
        raise VideoError(f"{path}: no frame could be decoded (empty, corrupt or unsupported video)")
    numbers = np.asarray(numbers, dtype=np.int32)
    if max_frames and len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames, numbers = [frames[i] for i in keep], numbers[keep]
    if frames[0].ndim == 2:  # grayscale throughout: one channel
        stack = np.stack(frames)[..., None]
    else:
        stack = np.stack(frames)[..., ::-1]  # BGR -> RGB
    return DecodedVideo(np.ascontiguousarray(stack), numbers, fps, int(n_source), stack.shape[1:3])


class _FrameCollector:
    """Keeps decoded BGR frames as one channel while they are grayscale (a third of the memory
    and copying), and switches to colour for the whole video at its first colour frame."""

    def __init__(self):
        self.frames: list[np.ndarray] = []
        self.gray = True

    def add(self, bgr: np.ndarray) -> None:
        if bgr.ndim == 2:
            bgr = bgr[..., None].repeat(3, axis=2)
        if self.gray and not _is_gray_frame(bgr):
            self.gray = False
            self.frames = [f[..., None].repeat(3, axis=2) for f in self.frames]
        self.frames.append(bgr[..., 0].copy() if self.gray else bgr.copy())


def _decode_container(path: Path, stride: int):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: cannot open video (corrupt file or unsupported container)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    collected, numbers, i, buf = _FrameCollector(), [], 0, None
    try:
        while True:
            if i % stride:
                # grab() skips the colour conversion of frames the stride drops
                if not cap.grab():
                    break
            else:
                # decode into one reused buffer: fresh memory per frame costs as much as decoding
                ok, buf = cap.read(buf)
                if not ok or buf is None:
                    break
                collected.add(buf)
                numbers.append(i)
            i += 1
    finally:
        cap.release()
    frames = collected.frames
    if frames and len({f.shape for f in frames}) > 1:
        raise VideoError(f"{path}: frames change size mid-video")
    return frames, numbers, fps


def _decode_folder(path: Path, stride: int):
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    collected, numbers = _FrameCollector(), []
    for i, file in enumerate(files):
        if i % stride:
            continue
        img = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"{file}: unreadable image in frame folder {path}")
        collected.add(img)
        numbers.append(i)
    frames = collected.frames
    if frames and len({f.shape for f in frames}) > 1:
        raise VideoError(f"{path}: frame images differ in size")
    return frames, numbers, 0.0


def _is_gray_frame(bgr: np.ndarray, tolerance: int = 24, max_fraction: float = 0.002) -> bool:
    """True when the colour channels agree up to codec noise (chroma subsampling)."""
    # a sparse grid is enough for colour overlays (Doppler boxes, coloured markers), and uint8
    # absdiff in OpenCV avoids numpy temporaries: this check runs on every decoded frame
    sample = np.ascontiguousarray(bgr[::4, ::4])
    b, g, r = cv2.split(sample)
    spread = cv2.max(cv2.absdiff(b, g), cv2.max(cv2.absdiff(g, r), cv2.absdiff(b, r)))
    return cv2.countNonZero((spread > tolerance).view(np.uint8)) <= max_fraction * spread.size


def find_sector(frames: np.ndarray, threshold: float = 0.05, floor: float = 6.0) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the ultrasound sector.

    A pixel belongs to the sector when its mean over all frames is bright OR it flickers
    (temporal std): deep, low-gain parts of a fan are dark on average but still carry
    speckle, and a dark or blank first frame does not matter. Holes are closed, thin
    overlays (text, depth markers) removed by an opening, and the largest connected
    component is kept.
    """
    # a subsample of frames at reduced resolution gives the same box at a fraction of the cost
    step = max(1, len(frames) // 24)
    scale = max(1, min(frames.shape[1:3]) // 128)
    sample = frames[::step, ::scale, ::scale].astype(np.float32)
    gray = sample.mean(axis=3) if sample.ndim == 4 else sample
    activity = np.maximum(gray.mean(axis=0), 2.0 * gray.std(axis=0))
    h, w = activity.shape
    peak = np.percentile(activity, 99.5)
    if peak <= floor:
        return 0, 0, frames.shape[2], frames.shape[1]
    mask = (activity > max(floor, threshold * peak)).astype(np.uint8)
    k = max(3, (min(h, w) // 40) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3 * k, 3 * k), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return 0, 0, frames.shape[2], frames.shape[1]
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = stats[largest, :4]
    full_h, full_w = frames.shape[1:3]
    if bw * bh < 0.05 * h * w:  # nothing sector-like: keep the full frame
        return 0, 0, full_w, full_h
    return int(x * scale), int(y * scale), min(full_w, int((x + bw) * scale)), min(full_h, int((y + bh) * scale))


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop to `box`, scale the longer side to `size` and centre on a black square canvas
    (padding instead of stretching keeps the fan's geometry)."""
    x0, y0, x1, y1 = box
    n, c = len(frames), frames.shape[3]
    h, w = y1 - y0, x1 - x0
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    oy, ox = (size - nh) // 2, (size - nw) // 2
    out = np.zeros((n, size, size, c), dtype=np.uint8)

    def one(i: int) -> None:
        img = frames[i, y0:y1, x0:x1]
        # halve with pyrDown (cheap anti-aliasing) while far too large, then a linear resize:
        # INTER_AREA at a non-integer factor costs as much as decoding the frame
        while img.shape[0] >= 2 * nh and img.shape[1] >= 2 * nw:
            img = cv2.pyrDown(img)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        out[i, oy : oy + nh, ox : ox + nw] = img.reshape(nh, nw, c)

    # OpenCV releases the GIL: frames resize in parallel threads
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(one, range(n)))
    return out
