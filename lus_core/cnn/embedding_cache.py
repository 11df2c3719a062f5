"""The embedding cache: frozen-encoder features of every frame, one HDF5 file per video and encoder.

With a frozen pretrained encoder (`train.finetune: head`, the study's recipe) every epoch of
end-to-end training recomputes the same features; only the new output layer learns. The cache
computes them once per video (step `embed`, one file per video, the videos spread over
`train.embedding_jobs` jobs, so it scales out on SLURM) and the
head then trains on the cached features in seconds (`lus_core.cnn.train`), with the same batches,
optimiser, loss and early stopping as end-to-end training, so the trained head is the same up
to float rounding (`bench/heads.py`).

`R/embeddings/{backbone}/{video}.h5` (written atomically):

| dataset     | dtype / shape           | meaning                                              |
|-------------|-------------------------|------------------------------------------------------|
| `embedding` | float32 (N, 1 + V, D)   | view 0: the frame as stored; views 1..V: augmented   |
|             | or (N, 1 + V, C, H, W)  | the last blocks' input (`finetune: {last_blocks: N}`) |
| `row`       | int32 (N,)              | row of the frame in `frames/{video}.h5`              |

attrs: `format` (this module's version), `video_id`, `source_sha256` (the frame store's),
`encoder` (JSON: backbone, weights, weights_sha256, image_size, n_views, augment, seed), `config`.

With `train.finetune: {last_blocks: N}` (resnet18, efficientnet_lite0/1/2) the same files hold, in
`embedding`, the activations at the input of the backbone's last N blocks, float32 (N, 1 + V, C,
H, W) (`encoder` then records `before_last_blocks: N`): what the frozen blocks compute once, so the
last blocks train on it without running the frozen ones every epoch
(`lus_core.cnn.backbones.LUSModel.activations_before`; `bench/blocks.py`).

Only backbones whose logits are a function of the pooled embedding (``logits = head(embedding)``)
can train a head from it: resnet18, vgg16, efficientnet_lite0/1/2. squeezenet1_1's head is a 1x1 conv, ReLU
and pooling after it (the ReLU does not commute with the pooling) and trains end to end;
`scratch` and random-init backbones train every layer and are never cached.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from lus_core.cnn.augment import Augment
from lus_core.cnn.backbones import build_model
from lus_core.cnn.frame_dataset import FrameDataset, prepare_batch, training_targets
from lus_core.cnn.settings import cache_enabled, encoder_settings
from lus_core.frames.store import build_frame_index
from lus_core.io_utils import atomic_path, config_json, sha256_file

FORMAT = 1
log = logging.getLogger("lus.embed")


@dataclass
class EmbeddingCache:
    video: str
    row: np.ndarray  # (N,) row in the frame store
    embedding: np.ndarray  # (N, 1 + V, D) float32
    encoder: dict
    source_sha256: str = ""


def write_cache(path: str | Path, cache: EmbeddingCache, config: dict) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("embedding", data=cache.embedding.astype(np.float32))
        f.create_dataset("row", data=cache.row.astype(np.int32))
        f.attrs["format"] = FORMAT
        f.attrs["video_id"] = cache.video
        f.attrs["source_sha256"] = cache.source_sha256
        f.attrs["encoder"] = json.dumps(cache.encoder, sort_keys=True)
        f.attrs["config"] = config_json(config)


def read_cache(path: str | Path, expected_encoder: dict | None = None) -> EmbeddingCache:
    """Read one cache file; with `expected_encoder`, refuse a cache made by other settings."""
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format", -1)) != FORMAT or "embedding" not in f:
                raise ValueError(f"{path}: not an embedding cache of format {FORMAT}; rerun the `embed` step")
            cache = EmbeddingCache(
                video=str(f.attrs["video_id"]),
                row=f["row"][()].astype(np.int64),
                embedding=f["embedding"][()],
                encoder=json.loads(f.attrs["encoder"]),
                source_sha256=str(f.attrs.get("source_sha256", "")),
            )
    except OSError as e:
        raise ValueError(f"{path}: unreadable embedding cache ({e}); delete it and rerun the `embed` step") from e
    if expected_encoder is not None and cache.encoder != json.loads(json.dumps(expected_encoder, sort_keys=True)):
        raise ValueError(
            f"{path}: made with encoder settings {cache.encoder}, the config asks for {expected_encoder}; "
            "rerun the `embed` step"
        )
    return cache


def view_seed(seed: int, video: str) -> int:
    """The augmentation generator's seed of one video: independent of the other videos and jobs."""
    return (int(seed) * 1_000_003 + zlib.crc32(video.encode())) % (2**63)


def encode_video(store_h5: str | Path, out_h5: str | Path, backbone: str, config: dict, **kwargs) -> EmbeddingCache:
    """Embed every frame of one frame store with the frozen encoder (+ V augmented views)."""
    return encode_videos([store_h5], [out_h5], backbone, config, **kwargs)[0]


@torch.inference_mode()
def encode_videos(
    stores: list[str | Path],
    outs: list[str | Path],
    backbone: str,
    config: dict,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> list[EmbeddingCache]:
    """Embed the frame stores `stores` into the cache files `outs` (one per video, each written
    atomically as soon as it is done), building the encoder once."""
    if not cache_enabled(config, backbone):
        raise ValueError(f"{backbone}: the embedding cache needs a frozen pretrained encoder "
                         "(finetune: head, or last_blocks on resnet18 / efficientnet_lite0/1/2)")
    if len(stores) != len(outs):
        raise ValueError(f"{len(stores)} frame stores for {len(outs)} cache files")
    settings = encoder_settings(config, backbone)
    device = torch.device(device)
    # the output layer is never used here: the features do not depend on the classes
    model = build_model(backbone, 2, settings["weights"], "head").to(device).eval()
    blocks = int(settings.get("before_last_blocks", 0))

    def features(x: torch.Tensor) -> torch.Tensor:
        return model.activations_before(x, blocks) if blocks else model.embed(x)[1]

    augment = Augment(settings["augment"]) if settings["n_views"] else None
    caches = []
    for i, (store_h5, out_h5) in enumerate(zip(stores, outs, strict=True)):
        index = build_frame_index([store_h5])
        video = str(index["video"].iloc[0]) if len(index) else Path(store_h5).stem
        ds = FrameDataset(index, settings["image_size"])
        gen = torch.Generator().manual_seed(view_seed(settings["seed"], video))
        views: list[list[torch.Tensor]] = [[] for _ in range(1 + settings["n_views"])]
        for xb, _, _ in DataLoader(ds, batch_size, shuffle=False):
            for v in range(len(views)):
                x = prepare_batch(xb, device, augment if v else None, gen if v else None)
                views[v].append(features(x).float().cpu())
        ds.close()
        if not len(index):  # a video without frames: the feature shape of one blank frame
            blank = torch.zeros(1, 3, settings["image_size"], settings["image_size"], device=device)
            views = [[features(blank)[:0].float().cpu()] for _ in views]
        emb = np.stack([torch.cat(v).numpy() for v in views], axis=1)
        cache = EmbeddingCache(video, index["row"].to_numpy(), emb.astype(np.float32), settings, sha256_file(store_h5))
        write_cache(out_h5, cache, config)
        caches.append(cache)
        log.info("embedded %s (%d frames, %d/%d videos)", video, len(index), i + 1, len(stores))
    return caches


def load_features(index: pd.DataFrame, cache_paths: dict[str, str | Path], expected_encoder: dict) -> np.ndarray:
    """(N, 1 + V, D) features of the frame-index rows `index`, in its order, from their videos' caches."""
    out: np.ndarray | None = None
    videos = index["video"].astype(str).to_numpy()
    rows = index["row"].to_numpy()
    for video in pd.unique(videos):
        if video not in cache_paths:
            raise ValueError(f"no embedding cache for video {video!r}")
        cache = read_cache(cache_paths[video], expected_encoder)
        where = np.flatnonzero(videos == video)
        pos = pd.Series(np.arange(len(cache.row)), index=cache.row)
        missing = set(rows[where]) - set(cache.row)
        if missing:
            raise ValueError(f"{cache_paths[video]}: no features for store rows {sorted(missing)[:5]}; rerun `embed`")
        if out is None:
            out = np.empty((len(index), *cache.embedding.shape[1:]), np.float32)
        out[where] = cache.embedding[pos.loc[rows[where]].to_numpy()]
    if out is None:
        raise ValueError("no frames to load features for")
    return out


class FeatureDataset(torch.utils.data.Dataset):
    """Item i = (cached features (1 + V, D), target, frame_id) of row i of `index`: the
    cached counterpart of `lus_core.cnn.frame_dataset.FrameDataset`, batched the same way."""

    def __init__(self, index: pd.DataFrame, features: np.ndarray, findings: Sequence[str] = ()):
        if len(features) != len(index):
            raise ValueError(f"{len(features)} feature rows for {len(index)} frames")
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = index["label"].to_numpy(np.int64)
        self.targets = training_targets(index, findings)
        self.frame_ids = index["frame_id"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[i], self.targets[i], self.frame_ids[i]

    def close(self) -> None:
        pass


def view_picker(device: torch.device, generator: torch.Generator | None):
    """Training input from a batch of cached views: one random view per frame (view 0 alone
    when no augmented views were cached, drawing nothing, so the batches equal end-to-end ones)."""

    def pick(xb: torch.Tensor) -> torch.Tensor:
        if xb.shape[1] == 1:
            return xb[:, 0].to(device)
        v = torch.randint(0, xb.shape[1], (len(xb),), generator=generator)
        return xb[torch.arange(len(xb)), v].to(device)

    return pick


def clean_view(device: torch.device):
    """Evaluation input: view 0, the frame as stored."""
    return lambda xb: xb[:, 0].to(device)


def cache_paths_by_video(paths) -> dict[str, str] | None:
    """A rule's list of cache files -> {video: path}; None when the rule got none (no frozen encoder)."""
    paths = list(paths)
    return {Path(p).stem: str(p) for p in paths} if paths else None
