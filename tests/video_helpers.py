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


# --- MP4 "faststart": the index (moov) in front of the media data (mdat) -----------------------
# OpenCV writes moov after mdat; web-optimised files (ffmpeg -movflags +faststart) have it first,
# so a truncated copy still opens and declares every frame while only part of the data is there.

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta"}


def _boxes(data: bytes, start: int, end: int):
    """(type, start, header_size, end) of each box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        yield kind, pos, header, pos + size
        pos += size


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, shift: int) -> int:
    """Add `shift` to every stco/co64 entry under moov[start:end]; returns how many were fixed."""
    fixed = 0
    for kind, pos, header, box_end in _boxes(moov, start, end):
        if kind in _CONTAINERS:
            fixed += _shift_chunk_offsets(moov, pos + header, box_end, shift)
        elif kind in (b"stco", b"co64"):
            width = 4 if kind == b"stco" else 8
            body = pos + header + 4  # version + flags
            count = int.from_bytes(moov[body : body + 4], "big")
            for k in range(count):
                at = body + 4 + k * width
                value = int.from_bytes(moov[at : at + width], "big") + shift
                moov[at : at + width] = value.to_bytes(width, "big")
                fixed += 1
    return fixed


def faststart(src: Path, dst: Path) -> Path:
    """Copy an MP4 with its moov box moved before mdat and the chunk offsets fixed."""
    data = src.read_bytes()
    boxes = list(_boxes(data, 0, len(data)))
    kinds = [b[0] for b in boxes]
    assert b"moov" in kinds and b"mdat" in kinds, f"{src}: not an MP4 with moov and mdat"
    moov_box = boxes[kinds.index(b"moov")]
    mdat_at = kinds.index(b"mdat")
    assert kinds.index(b"moov") > mdat_at, f"{src}: moov is already in front"
    moov = bytearray(data[moov_box[1] : moov_box[3]])
    # every box from mdat on moves back by the size of moov: so does every chunk of media data
    assert _shift_chunk_offsets(moov, 8, len(moov), len(moov)) > 0, f"{src}: no chunk offsets"
    out = bytearray()
    for i, (kind, pos, _, end) in enumerate(boxes):
        if i == mdat_at:
            out += moov
        if kind != b"moov":
            out += data[pos:end]
    dst.write_bytes(bytes(out))
    return dst
