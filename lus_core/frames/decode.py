"""Decode LUS videos (any OpenCV container, GIF, a folder of PNG/JPEG frames, a DICOM cine loop
or single-frame DICOM series: lus_core.frames.dicom), find the ultrasound sector and crop/resize
frames to a fixed square size.

Decoding keeps in memory only what is stored: the frames the stride and `max_frames` select
(the others are grabbed, never converted) and, for the sector, a small subsample of
reduced-size frames spread over the whole video.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lus_core.frames.dicom import DicomError, DicomVideo, is_dicom, is_dicom_file, is_dicom_series

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".m4v", ".wmv"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
SECTOR_SAMPLE = 32  # the sector is found from 32-63 frames spread over the video
SECTOR_SIDE = 128  # ... each reduced to about this many pixels on its shorter side
MAX_PREALLOCATED_BYTES = 512 << 20
PARALLEL_CROP_PIXELS = 50_000_000  # below this, threads cost more than they save


class VideoError(ValueError):
    """A video cannot be used; the message names the file and the problem."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 (N, H, W, C) with C = 1 (grayscale) or 3 (RGB)
    frame_numbers: np.ndarray  # source frame number of each kept frame
    fps: float
    n_source_frames: int  # frames decoded from the file
    original_size: tuple[int, int]  # (h, w)
    n_declared_frames: int = 0  # frames the container declares (0: it does not say)
    sector_sample: np.ndarray | None = None  # uint8 (S, h, w) gray thumbnails spread over the video
    sample_scale: int = 1  # thumbnail pixel = sample_scale source pixels
    # DICOM only: the sector its ultrasound regions give (x0, y0, x1, y1), the BurnedInAnnotation
    # flag ('YES' / 'NO' / '' not stated) and the scanner's make and model
    region_box: tuple[int, int, int, int] | None = None
    burned_in: str = ""
    device: str = ""

    def sector_box(self) -> tuple[int, int, int, int]:
        """The sector's bounding box in source pixels, from the whole-video subsample."""
        if self.sector_sample is None:
            return find_sector(self.frames)
        return sector_box(self.sector_sample, self.sample_scale, self.original_size)


def grey(frames: np.ndarray) -> np.ndarray:
    """uint8 frames (N, H, W, C) -> their grey image (N, H, W, 1): colour frames by OpenCV's
    luminance (0.299 R + 0.587 G + 0.114 B, integer arithmetic, exact on every processor), grey
    ones as they are. What the CNN and the raw-pixel space see of every frame: a cohort mixing grey
    and colour videos is one kind of input (colour stays in the stores, for the pictures)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (N, H, W, 1|3), got shape {frames.shape}")
    if frames.shape[-1] == 1:
        return frames
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])[..., None] \
        if len(frames) else frames[..., :1]


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def is_video(path: Path) -> bool:
    """A video file (container or DICOM), a folder of frames or a DICOM series folder."""
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS or is_dicom_file(path)
    return is_frame_folder(path) or is_dicom_series(path)


def _source(path: Path, threads: int = 0):
    if is_dicom(path):
        return _DicomSource(path)
    return _FolderSource(path) if path.is_dir() else _ContainerSource(path, threads)


def keep_plan(n_frames: int, stride: int = 1, max_frames: int = 0) -> np.ndarray:
    """Source frame numbers kept from a video of `n_frames`: every `stride`-th, then at most
    `max_frames` of those, evenly spaced (first and last included)."""
    candidates = np.arange(0, n_frames, stride, dtype=np.int64)
    if max_frames and len(candidates) > max_frames:
        candidates = candidates[np.linspace(0, len(candidates) - 1, max_frames).round().astype(int)]
    return candidates


def decode(
    path: str | Path, stride: int = 1, max_frames: int = 0, min_decoded_fraction: float | None = None,
    threads: int = 0, frames: np.ndarray | None = None,
) -> DecodedVideo:
    """Decode the frames `keep_plan` selects (or exactly the source frame numbers `frames`), plus
    a sector subsample.

    A container that declares more frames than can be decoded (a truncated or damaged file that
    still opens) is refused when fewer than `min_decoded_fraction` of them decode (the workflow
    passes dataset.min_decoded_fraction; None: no such check). `threads`: FFmpeg's decoding
    threads (0: its default, one per core); the frames are the same whatever the count, since
    FFmpeg's threaded decoding is bit-exact.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    source = _source(path, threads)
    declared = source.declared_frames()
    # max_frames needs the length up front: plan on the declared count, or count first
    n_planned = (declared or source.count()) if max_frames and frames is None else 0
    for _ in range(2):
        plan = np.asarray(frames, np.int64) if frames is not None else (
            keep_plan(n_planned, stride, max_frames) if max_frames else None)
        video = _read(source, stride, plan)
        n = video.n_source_frames
        if n == 0:
            raise VideoError(f"{path}: no frame could be decoded (empty, corrupt or unsupported video)")
        if declared and min_decoded_fraction is not None and n < min_decoded_fraction * declared:
            raise VideoError(
                f"{path}: only {n} of the {declared} frames its container declares could be decoded "
                f"({n / declared:.0%}, below dataset.min_decoded_fraction = {min_decoded_fraction}): "
                "truncated or damaged file"
            )
        video.n_declared_frames = declared
        if plan is None or frames is not None or np.array_equal(plan, keep_plan(n, stride, max_frames)):
            return video
        n_planned = n  # the declared count was off: plan again on the true one
    raise VideoError(f"{path}: decodes to a different number of frames on each pass ({n_planned}, then {n})")


def frame_stds(path: str | Path, stride: int, box: tuple[int, int, int, int], size: int,
               threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(source frame numbers, `sector_std` of each `crop_resize`d frame) of every `stride`-th frame
    of the video, in one decoding pass that keeps no frame: which frames are blank, before a
    frame cap chooses among the others."""
    path = Path(path)
    source = _source(path, threads)
    collector = _StdCollector(box, size)
    source.read(lambda i: i % stride == 0, _NoSample(), collector)
    return np.asarray(collector.numbers, np.int64), np.asarray(collector.stds, np.float64)


class _StdCollector:
    """A collector that measures each frame as the store would hold it and keeps only the measure."""

    def __init__(self, box: tuple[int, int, int, int], size: int):
        self.box, self.size = box, size
        self.numbers: list[int] = []
        self.stds: list[float] = []

    def add(self, bgr: np.ndarray, number: int) -> None:
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        # a grey frame as one channel, a colour one as RGB: the same deviation as the stored copy
        frame = bgr[..., :1] if _is_gray_frame(bgr) else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.stds.append(float(sector_std(crop_resize(frame[None], self.box, self.size), self.box)[0]))
        self.numbers.append(number)


class _NoSample:
    def wants(self, i: int) -> bool:
        return False


def _read(source, stride: int, plan: np.ndarray | None) -> DecodedVideo:
    """One pass over the source: kept frames retrieved in full, sector frames as thumbnails."""
    if plan is None:
        keep, capacity = (lambda i: i % stride == 0), -(-source.declared_frames() // stride)
    else:
        wanted = set(plan.tolist())
        keep, capacity = wanted.__contains__, len(plan)
    # the sample's step from the declared length: no frame thumbnailed only to be dropped
    collector, sampler = _FrameCollector(source.path, capacity), _SectorSampler(source.path, source.declared_frames())
    n = source.read(keep, sampler, collector)
    frames, numbers = collector.result()
    return DecodedVideo(frames, numbers, source.fps, n, frames.shape[1:3], 0, sampler.result(), sampler.scale,
                        getattr(source, "region_box", None), getattr(source, "burned_in", ""),
                        getattr(source, "device", ""))


class _ContainerSource:
    def __init__(self, path: Path, threads: int = 0):
        self.path, self.threads = path, threads
        self._cap: cv2.VideoCapture | None = self._open()  # kept for the first pass
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # OpenCV's FFmpeg backend gives the stream's frame count, or duration x fps where the
        # container has no count; some containers give nothing (0) or nonsense (< 0)
        self._declared = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))

    def _take(self) -> cv2.VideoCapture:
        cap, self._cap = self._cap, None
        return cap if cap is not None else self._open()

    def _open(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_N_THREADS, self.threads] if self.threads else []
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY, params)
        if params and not cap.isOpened():  # a backend that takes no thread count: its default
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise VideoError(f"{self.path}: cannot open video (corrupt file or unsupported container)")
        return cap

    def declared_frames(self) -> int:
        return self._declared

    def count(self) -> int:
        cap, n = self._take(), 0
        while cap.grab():
            n += 1
        cap.release()
        return n

    def read(self, keep: Callable[[int], bool], sampler: _SectorSampler, collector: _FrameCollector) -> int:
        cap, n = self._take(), 0
        # this thread decodes; a second one stores each frame (colour check, copy, thumbnail)
        # meanwhile: FFmpeg's decoding leaves part of the second core idle, and OpenCV and
        # numpy release the GIL for the pixel work
        with _FrameConsumer(collector, sampler) as consumer:
            try:
                # grab() decodes; retrieve() converts to BGR: only for the frames that are used
                while cap.grab():
                    kept, sampled = keep(n), sampler.wants(n)
                    if kept or sampled:
                        ok, buf = cap.retrieve()  # a new buffer each time: the consumer holds it
                        if not ok or buf is None:
                            break
                        consumer.put(buf, n, kept, sampled)
                    n += 1
            finally:
                cap.release()
        return n


class _FrameConsumer:
    """Runs `_use` on decoded frames in a worker thread, in order; an error there is raised in
    the decoding thread (at the next frame or when the block ends)."""

    def __init__(self, collector, sampler, depth: int = 8):
        self.collector, self.sampler = collector, sampler
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="frame-store", daemon=True)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _use(*item, self.collector, self.sampler)
                except BaseException as e:  # re-raised in the decoding thread
                    self.error = e

    def put(self, bgr: np.ndarray, number: int, kept: bool, sampled: bool) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((bgr, number, kept, sampled))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


class _FolderSource:
    def __init__(self, path: Path):
        self.path, self.fps = path, 0.0
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)

    def declared_frames(self) -> int:
        return len(self.files)

    def count(self) -> int:
        return len(self.files)

    def read(self, keep: Callable[[int], bool], sampler: _SectorSampler, collector: _FrameCollector) -> int:
        for i, file in enumerate(self.files):
            kept, sampled = keep(i), sampler.wants(i)
            if not (kept or sampled):
                continue
            img = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"{file}: unreadable image in frame folder {self.path}")
            _use(img, i, kept, sampled, collector, sampler)
        return len(self.files)


class _DicomSource:
    """A DICOM cine loop or series (lus_core.frames.dicom) as a source: its header's frame count,
    frame rate, ultrasound regions and burned-in annotation flag."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.video = DicomVideo(path)
        except DicomError as exc:
            raise VideoError(str(exc)) from exc
        self.fps, self.region_box = self.video.fps, self.video.region_box
        self.burned_in, self.device = self.video.burned_in, self.video.device

    def declared_frames(self) -> int:
        return self.video.n_frames

    def count(self) -> int:
        return self.video.n_frames

    def read(self, keep: Callable[[int], bool], sampler: _SectorSampler, collector: _FrameCollector) -> int:
        n = 0
        try:
            for frame in self.video.frames():
                kept, sampled = keep(n), sampler.wants(n)
                if kept or sampled:
                    _use(frame, n, kept, sampled, collector, sampler)
                n += 1
        except DicomError as exc:
            raise VideoError(str(exc)) from exc
        return n


def _use(bgr: np.ndarray, number: int, kept: bool, sampled: bool, collector, sampler) -> None:
    if kept:
        stored = collector.add(bgr, number)
        if sampled:  # the thumbnail from the stored copy: one channel when gray
            sampler.add(stored, "RGB")
    elif sampled:
        sampler.add(bgr, "BGR")


class _FrameCollector:
    """Kept frames in one preallocated array: one channel (BGR's first) while the video is
    grayscale (a third of the memory and copying), RGB from its first colour frame on."""

    def __init__(self, path: Path, capacity: int):
        self.path, self.capacity = path, max(1, capacity)
        self.data: np.ndarray | None = None
        self.numbers: list[int] = []
        self.gray = True

    def add(self, bgr: np.ndarray, number: int) -> np.ndarray:
        """Store a BGR frame; returns the stored copy ((H, W) gray or (H, W, 3) RGB)."""
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        n = len(self.numbers)
        if self.data is None:
            # room for the expected count, bounded (a declared count can be nonsense); grows if short
            room = max(1, MAX_PREALLOCATED_BYTES // (bgr.shape[0] * bgr.shape[1]))
            self.data = np.empty((min(self.capacity, room), *bgr.shape[:2]), np.uint8)
        elif bgr.shape[:2] != self.data.shape[1:3]:
            raise VideoError(f"{self.path}: frames change size mid-video")
        if self.gray and not _is_gray_frame(bgr):
            self.gray = False
            colour = np.empty((*self.data.shape, 3), np.uint8)
            colour[:n] = self.data[:n, ..., None]
            self.data = colour
        if n == len(self.data):  # the declared count was short: grow
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        if self.gray:
            np.copyto(self.data[n], bgr[..., 0])  # faster than cv2.extractChannel
        else:
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=self.data[n])
        self.numbers.append(number)
        return self.data[n]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.numbers)
        if self.data is None:
            return np.zeros((0, 0, 0, 1), np.uint8), np.zeros(0, np.int32)
        frames = self.data[:n] if n == len(self.data) else self.data[:n].copy()  # free the spare
        return (frames[..., None] if self.gray else frames), np.asarray(self.numbers, dtype=np.int32)


def _sector_step(n_frames: int, target: int = SECTOR_SAMPLE) -> int:
    """The step of the sector subsample over n frames: the smallest power of two leaving fewer
    than 2 x target frames (what _SectorSampler ends with, when n is not known ahead)."""
    step = 1
    while -(-n_frames // step) >= 2 * target:
        step *= 2
    return step


def _thumbnail(frame: np.ndarray, scale: int, order: str = "BGR") -> np.ndarray:
    """Every scale-th pixel of every scale-th row, as gray."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (-(-w // scale), -(-h // scale)), interpolation=cv2.INTER_NEAREST)
    if small.ndim == 3 and small.shape[2] == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY if order == "BGR" else cv2.COLOR_RGB2GRAY)
    return small.reshape(small.shape[:2])


class _SectorSampler:
    """Gray thumbnails of every step-th frame; when 2 x target are held, every other one is
    dropped and the step doubles: target to 2 x target frames evenly spread, however long the
    video, whether its expected length is right, wrong or unknown (0)."""

    def __init__(self, path: Path, expected_frames: int = 0, target: int = SECTOR_SAMPLE):
        self.path, self.target, self.step, self.scale = path, target, _sector_step(expected_frames, target), 1
        self.thumbs: list[np.ndarray] = []

    def wants(self, i: int) -> bool:
        return i % self.step == 0

    def add(self, frame: np.ndarray, order: str) -> None:
        if not self.thumbs:
            self.scale = max(1, min(frame.shape[:2]) // SECTOR_SIDE)
        thumb = _thumbnail(frame, self.scale, order)
        if self.thumbs and thumb.shape != self.thumbs[0].shape:
            raise VideoError(f"{self.path}: frames change size mid-video")
        self.thumbs.append(thumb)
        if len(self.thumbs) >= 2 * self.target:
            self.thumbs, self.step = self.thumbs[::2], self.step * 2

    def result(self) -> np.ndarray | None:
        return np.stack(self.thumbs) if self.thumbs else None


def _is_gray_frame(bgr: np.ndarray, tolerance: int = 12, max_fraction: float = 0.002) -> bool:
    """True when the frame has no colour beyond codec noise (chroma subsampling): the chroma of
    a sparse grid of pixels stays within `tolerance` of neutral (128)."""
    # a sparse grid is enough for colour overlays (Doppler boxes, coloured markers); a few
    # OpenCV calls without numpy temporaries, since this runs on every kept frame. The grid keeps
    # about 100 x 100 samples whatever the frame size, so that one coloured logo pixel of a small
    # frame (0.2% of a coarse grid) does not make a grayscale video colour
    h, w = bgr.shape[:2]
    step = max(1, min(h, w) // 96)
    grid = cv2.resize(bgr, (max(1, w // step), max(1, h // step)), interpolation=cv2.INTER_NEAREST)
    ycc = cv2.cvtColor(grid, cv2.COLOR_BGR2YCrCb)
    neutral = cv2.inRange(ycc, (0, 128 - tolerance, 128 - tolerance), (255, 128 + tolerance, 128 + tolerance))
    n = neutral.size
    return n - cv2.countNonZero(neutral) <= max_fraction * n


def find_sector(frames: np.ndarray, threshold: float = 0.05, floor: float = 6.0) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the ultrasound sector in uint8 (N, H, W, C) frames
    (the same subsample and thumbnails as `decode` takes while decoding)."""
    scale = max(1, min(frames.shape[1:3]) // SECTOR_SIDE)
    sample = np.stack([_thumbnail(f, scale, "RGB") for f in frames[:: _sector_step(len(frames))]])
    return sector_box(sample, scale, frames.shape[1:3], threshold, floor)


def sector_box(
    sample: np.ndarray, scale: int, full_size: tuple[int, int], threshold: float = 0.05, floor: float = 6.0,
) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), in source pixels, of the sector in uint8 (S, h, w) gray
    thumbnails spread over a video of frame size `full_size` (h, w).

    A pixel belongs to the sector when its mean over all frames is bright OR it flickers
    (temporal std): deep, low-gain parts of a fan are dark on average but still carry
    speckle, and a dark or blank first frame does not matter. Holes are closed, thin
    overlays (text, depth markers) removed by an opening, and the largest connected
    component is kept.
    """
    full_h, full_w = full_size
    activity = _mean_or_flicker(sample)
    h, w = activity.shape
    peak = np.percentile(activity, 99.5)
    if peak <= floor:
        return 0, 0, full_w, full_h
    mask = (activity > max(floor, threshold * peak)).astype(np.uint8)
    k = max(3, (min(h, w) // 40) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3 * k, 3 * k), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return 0, 0, full_w, full_h
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = stats[largest, :4]
    if bw * bh < 0.05 * h * w:  # nothing sector-like: keep the full frame
        return 0, 0, full_w, full_h
    return int(x * scale), int(y * scale), min(full_w, int((x + bw) * scale)), min(full_h, int((y + bh) * scale))


def _mean_or_flicker(sample: np.ndarray) -> np.ndarray:
    """Per pixel max(mean, 2 x std) over the frames (OpenCV accumulators: exact integer sums
    in float64, a third of numpy's time)."""
    total, squares = np.zeros(sample.shape[1:], np.float64), np.zeros(sample.shape[1:], np.float64)
    for thumb in sample:
        cv2.accumulate(thumb, total)
        cv2.accumulateSquare(thumb, squares)
    mean = total / len(sample)
    return np.maximum(mean, 2.0 * np.sqrt(np.maximum(squares / len(sample) - mean * mean, 0.0)))


def placement(box: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    """Where `crop_resize` puts the box on its square canvas: (y0, x0, height, width)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return (size - nh) // 2, (size - nw) // 2, nh, nw


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop to `box`, scale the longer side to `size` and centre on a black square canvas
    (padding instead of stretching keeps the fan's geometry)."""
    x0, y0, x1, y1 = box
    n, c = len(frames), frames.shape[3]
    oy, ox, nh, nw = placement(box, size)
    out = np.zeros((n, size, size, c), dtype=np.uint8)

    def part(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            img = frames[i, y0:y1, x0:x1]
            # halve (2x2 means: anti-aliased) while far too large, then a linear resize; an odd
            # last row/column is dropped, since INTER_AREA is fast only at exactly 2x (at a
            # non-integer factor it costs as much as decoding the frame; pyrDown costs 4x more)
            while img.shape[0] >= 2 * nh and img.shape[1] >= 2 * nw:
                h2, w2 = img.shape[0] // 2, img.shape[1] // 2
                img = cv2.resize(img[: 2 * h2, : 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            out[i, oy : oy + nh, ox : ox + nw] = img.reshape(nh, nw, c)

    # OpenCV releases the GIL: one contiguous run of frames per thread (a task per frame
    # would cost as much in scheduling as the resize of a small frame); small work in one
    workers = max(1, min(n, os.cpu_count() or 1)) if n * (y1 - y0) * (x1 - x0) > PARALLEL_CROP_PIXELS else 1
    if workers == 1:
        part(0, n)
        return out
    bounds = np.linspace(0, n, workers + 1).round().astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(part, bounds[:-1], bounds[1:]))
    return out


def sector_std(frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Standard deviation of each `crop_resize`d frame inside its sector box (not the padding)."""
    oy, ox, nh, nw = placement(box, frames.shape[1])
    inside = (np.ascontiguousarray(f[oy : oy + nh, ox : ox + nw]).reshape(nh, -1) for f in frames)
    return np.array([cv2.meanStdDev(img)[1][0, 0] for img in inside], dtype=np.float64)
