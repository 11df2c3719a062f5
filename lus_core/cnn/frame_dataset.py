"""A torch Dataset over rows of the frame index, and the uint8 -> model-input conversion.

Frames travel as uint8 (3, S, S) tensors from the HDF5 store to the device (4x less to copy
than float); `prepare_batch` turns a batch into normalised float there, optionally augmenting
it on the way (`lus_core.cnn.augment`). Grayscale frames (C = 1 in the store) are expanded to 3
channels and frames are resized to `image_size` at load time, the same way for training,
inference (`FrameDataset`) and single predictions (`frames_to_tensor`). The CNN sees the grey image
of every frame: colour frames (a Doppler box, a coloured annotation) by their luminance.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lus_core.frames.decode import grey
from lus_core.frames.store import FrameReader, finding_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_tensor(frames: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) frames, C in {1, 3} -> uint8 tensor (N, 3, S, S): the frames' grey image
    (lus_core.frames.decode.grey: colour frames too) in the three input channels.

    Resizing (bilinear, antialiased) happens only when the stored size differs from `image_size`.
    """
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"frames must be uint8 (N, H, W, C), got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must have 1 (grayscale) or 3 (RGB) channels, got {frames.shape[-1]}")
    x = torch.from_numpy(np.ascontiguousarray(grey(frames))).permute(0, 3, 1, 2)
    if image_size and tuple(x.shape[-2:]) != (image_size, image_size):
        y = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x = y.round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous()


def prepare_batch(
    x: torch.Tensor,
    device: torch.device | str,
    augment=None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float on `device`, augmented (if given) and ImageNet-normalised."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if augment is not None:
        x = augment(x, generator)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class StoreReader(FrameReader):
    """A `FrameReader` that also keeps each file's `frames` dataset object and, for the store's
    layout (one frame per chunk, gzip only), reads a frame as one raw chunk + zlib, skipping
    h5py's selection machinery (~5x less overhead per frame). Anything else: the plain read."""

    def __init__(self, index: pd.DataFrame):
        super().__init__(index)
        self._dsets: dict = {}

    def reset(self) -> None:
        self._dsets = {}
        super().reset()

    def __getstate__(self):
        return {**super().__getstate__(), "_dsets": {}}

    def frame(self, i: int) -> np.ndarray:
        path = self.h5[i]
        entry = self._dsets.get(path)
        if entry is None:
            first = super().frame(i)  # opens the file the FrameReader way
            f = getattr(self, "_files", {}).get(path)
            if f is None:
                return first
            d = f["frames"]
            fast = (
                d.dtype == np.uint8 and d.chunks == (1, *d.shape[1:]) and d.compression == "gzip"
                and not d.shuffle and not d.fletcher32 and d.scaleoffset is None
            )
            self._dsets[path] = (d, fast, tuple(d.shape[1:]))
            return first
        d, fast, shape = entry
        row = int(self.row[i])
        if fast:
            mask, raw = d.id.read_direct_chunk((row, 0, 0, 0))
            if mask == 0:
                return np.frombuffer(bytearray(zlib.decompress(raw)), np.uint8).reshape(shape)
        return d[row]


def training_targets(index: pd.DataFrame, findings: Sequence[str]) -> np.ndarray:
    """int64 class indices (N,), or (N, 1 + F) with the findings' values (-1 unknown) after them."""
    labels = index["label"].to_numpy(np.int64)
    if not findings:
        return labels
    return np.column_stack([labels, finding_targets(index, findings)])


class FrameDataset(Dataset):
    """Item i = (uint8 frame (3, S, S), target, frame_id) of row i of `index`; the target is the
    label index, or with `findings` the label index then the findings' values (`training_targets`).

    HDF5 files are opened lazily by a `FrameReader` owned by the process that reads: a reader
    inherited through a fork (DataLoader workers) is dropped unused and a fresh one opened.
    """

    def __init__(self, index: pd.DataFrame, image_size: int | None = None, findings: Sequence[str] = ()):
        self.index = index.reset_index(drop=True)
        self.labels = self.index["label"].to_numpy(np.int64)
        self.targets = training_targets(self.index, findings)
        self.frame_ids = self.index["frame_id"].to_numpy(np.int64)
        self.image_size = image_size
        self._reader: FrameReader | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def reader(self) -> StoreReader:
        if self._reader is None or self._pid != os.getpid():
            # never use HDF5 handles across a fork; the inherited reader is left untouched
            self._reader = StoreReader(self.index)
            self._pid = os.getpid()
        return self._reader

    def __getitem__(self, i: int):
        frame = self.reader.frame(int(i))
        x = frames_to_tensor(frame[None], self.image_size)[0]
        return x, self.targets[i], self.frame_ids[i]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.reset()
        self._reader = None

