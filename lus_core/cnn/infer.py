"""Inference: logits, softmax and penultimate embeddings for every frame, out-of-fold.

`run_infer` writes `predictions/{backbone}.h5` (docs/architecture.md): for a training patient
the scores come from the fold model whose `val_patients` hold that patient (so no score was made
by a model that trained on its own patient); for a test patient from the `all` model (fold -1).
Every model file records the patients it trained on, and `run_infer` checks them against the
split before scoring, so a mix-up of model files fails loudly instead of leaking.

With `train.ensemble: folds` a frame no model trained on (a test patient's) gets the mean
softmax of the `all` model and the K fold models (none of them saw that patient; logits are the
log of that mean, finding probabilities their mean, the embedding stays the `all` model's);
training patients keep their one out-of-fold model, the only one that did not train on them.
`lus predict` scores new videos the same way (`ensemble_scores`).

The file (written through :mod:`lus_core.cnn.predictions`) holds two embeddings: `embedding_oof`
by the model that made each frame's softmax (K fold models for training frames, i.e. K feature
spaces) and `embedding_all`, every frame by the `all` model; a similarity index that compares
test frames with training frames needs one space, which `embedding_all` provides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lus_core.cnn.backbones import LUSModel
from lus_core.cnn.device import amp_dtype_for, select_device
from lus_core.cnn.embedding_cache import load_features
from lus_core.cnn.frame_dataset import FrameDataset, frames_to_tensor, prepare_batch
from lus_core.cnn.model_file import load_model
from lus_core.cnn.predictions import Predictions, write_predictions
from lus_core.cnn.settings import (
    backbone_finetune,
    cache_enabled,
    encoder_settings,
    ensemble_of,
    trained_blocks,
)
from lus_core.frames.store import finding_targets, read_frame_index
from lus_core.io_utils import config_json, read_json
from lus_core.split.scopes import scope_split


def _forward(model: LUSModel, x_uint8: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cuda = device.type == "cuda"
    x = prepare_batch(x_uint8, device, channels_last=cuda)
    dtype = amp_dtype_for(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits, emb = model.embed(x)
    return logits.float().cpu(), emb.float().cpu()


def _outputs(logits: list[torch.Tensor], embs: list[torch.Tensor], n_classes: int, dim: int):
    lo = torch.cat(logits) if logits else torch.zeros(0, n_classes)
    em = torch.cat(embs) if embs else torch.zeros(0, dim)
    return lo.numpy().astype(np.float32), torch.softmax(lo, 1).numpy().astype(np.float32), em.numpy().astype(np.float32)


@torch.inference_mode()
def predict_frames(
    model: LUSModel,
    frames_uint8: np.ndarray,
    image_size: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 frames (N, H, W, C), C in {1, 3} -> (logits (N, C), softmax (N, C), embedding (N, D)),
    float32; no augmentation. The same preprocessing as training (`frames_to_tensor`)."""
    device = torch.device(device)
    model.eval()
    frames_uint8 = np.asarray(frames_uint8)
    logits, embs = [], []
    for start in range(0, len(frames_uint8), batch_size):
        lo, em = _forward(model, frames_to_tensor(frames_uint8[start : start + batch_size], image_size), device)
        logits.append(lo)
        embs.append(em)
    return _outputs(logits, embs, _n_out(model), model.embedding_dim)


@torch.inference_mode()
def predict_index(
    model: LUSModel,
    index: pd.DataFrame,
    image_size: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "infer",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `predict_frames`, for rows of the frame index (read from the frame store)."""
    device = torch.device(device)
    model.eval()
    ds = FrameDataset(index, image_size)
    loader = DataLoader(ds, batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda")
    logits, embs = [], []
    for xb, _, _ in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
        lo, em = _forward(model, xb, device)
        logits.append(lo)
        embs.append(em)
    ds.close()
    return _outputs(logits, embs, _n_out(model), model.embedding_dim)


@torch.inference_mode()
def predict_features(
    model: LUSModel, features: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 4096,
    blocks: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `predict_index`, from cached frozen-encoder embeddings (N, D) (`lus_core.cnn.embedding_cache`):
    the logits are the output layer applied to them, the embedding is the cached one. With
    `blocks` N > 0 (a `last_blocks:N` model) the features are the activations before its last N
    blocks (N, C, H, W), which it runs to the logits and embedding."""
    device = torch.device(device)
    model.eval()
    if blocks:
        acts = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        step = max(1, batch_size // 16)
        outs = [model.from_activations(acts[i : i + step].to(device), blocks) for i in range(0, len(acts), step)]
        return _outputs([lo.float().cpu() for lo, _ in outs], [em.float().cpu() for _, em in outs], _n_out(model),
                        model.embedding_dim)
    emb = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    logits = [model.head(emb[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(emb), batch_size)]
    return _outputs(logits, [emb], _n_out(model), model.embedding_dim)


@torch.inference_mode()
def finding_probabilities(model: LUSModel, embedding: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """float32 (N, F): each finding's probability (sigmoid of its output) from the model's
    embeddings of the frames; (N, 0) for a model without findings."""
    if model.findings_head is None:
        return np.zeros((len(embedding), 0), np.float32)
    # the layer's weights on the CPU, where the embeddings are (the model stays where it is)
    weight, bias = (t.detach().float().cpu() for t in (model.findings_head.weight, model.findings_head.bias))
    emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
    parts = [torch.sigmoid(F.linear(emb[i : i + batch_size], weight, bias)) for i in range(0, len(emb), batch_size)]
    return (torch.cat(parts) if parts else torch.zeros(0, len(bias))).numpy().astype(np.float32)


def ensemble_scores(softmaxes: list[np.ndarray], findings: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """(logits, softmax, finding probabilities) of an ensemble, from its models' softmax and
    finding probabilities: the means, and the log of the mean softmax as logits (so that the
    softmax of the logits is that mean)."""
    mean = np.mean(np.stack(softmaxes), axis=0, dtype=np.float64)
    return (np.log(np.maximum(mean, 1e-12)).astype(np.float32), mean.astype(np.float32),
            np.mean(np.stack(findings), axis=0))


def predict_frames_with(model: LUSModel, fold_models: list[LUSModel], frames_uint8: np.ndarray, image_size: int,
                        device: str | torch.device = "cpu") -> tuple[np.ndarray, ...]:
    """(logits, softmax, embedding, finding probabilities) of uint8 frames scored by `model` and,
    with `fold_models` (train.ensemble: folds), by the ensemble of it and them
    (`ensemble_scores`; the embedding stays `model`'s)."""
    logits, softmax, embedding = predict_frames(model, frames_uint8, image_size, device)
    findings = finding_probabilities(model, embedding)
    if fold_models:
        members = [predict_frames(m, frames_uint8, image_size, device) for m in fold_models]
        logits, softmax, findings = ensemble_scores(
            [softmax, *(sm for _, sm, _ in members)],
            [findings, *(finding_probabilities(m, em) for m, (_, _, em) in zip(fold_models, members, strict=True))])
    return logits, softmax, embedding, findings


def _n_out(model: LUSModel) -> int:
    head = model.head
    return int(head.out_features if hasattr(head, "out_features") else head.out_channels)


def assign_models(index: pd.DataFrame, split: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: split ("train" / "test") and the fold whose model scores it (-1 = `all`)."""
    test = {str(p) for p in split["test_patients"]}
    train = {str(p) for p in split["train_patients"]}
    if test & train:
        raise ValueError(f"split.json: patients both in test and train: {sorted(test & train)}")
    val_fold: dict[str, int] = {}
    for f in split["folds"]:
        for p in map(str, f["val_patients"]):
            if p in val_fold:
                raise ValueError(f"split.json: patient {p} in the validation set of folds {val_fold[p]} and {f['fold']}")
            val_fold[p] = int(f["fold"])
    patients = index["patient"].astype(str)
    unknown = sorted(set(patients) - test - train)
    if unknown:
        raise ValueError(f"patients in the frame index but not in split.json: {unknown[:10]}")
    unscored = sorted(p for p in set(patients) & train if p not in val_fold)
    if unscored:
        raise ValueError(f"training patients in no fold's val_patients (no out-of-fold model): {unscored[:10]}")
    is_test = patients.isin(test).to_numpy()
    fold = np.where(is_test, -1, patients.map(lambda p: val_fold.get(p, -1)).to_numpy()).astype(np.int16)
    return np.where(is_test, "test", "train"), fold


def _check_model(meta: dict, key: str, backbone: str, n_classes: int, scored: set[str], split: dict, path,
                 finding_names: list[str]) -> None:
    if meta["backbone"] != backbone:
        raise ValueError(f"{path}: a {meta['backbone']} model, expected {backbone}")
    if list(meta.get("finding_names", [])) != finding_names:
        raise ValueError(f"{path}: trained with findings {meta.get('finding_names', [])}, the config has {finding_names}")
    if int(meta["n_classes"]) != n_classes:
        raise ValueError(f"{path}: {meta['n_classes']} classes, config has {n_classes}")
    if str(meta.get("fold")) != key:
        raise ValueError(f"{path}: trained as fold {meta.get('fold')!r}, given for fold {key!r}")
    trained = set(map(str, meta.get("train_patients", [])))
    if key == "all":
        trained |= set(map(str, meta.get("val_patients", [])))  # the hold-out chose its epoch
    else:
        not_val = scored - set(map(str, meta.get("val_patients", [])))
        if not_val:
            raise ValueError(f"{path}: fold {key} model would score patients outside its validation set: {sorted(not_val)[:10]}")
    leak = scored & trained
    if leak:
        raise ValueError(f"{path}: model {key} trained on patients it would score: {sorted(leak)[:10]}")
    test_seen = set(map(str, split["test_patients"])) & (
        set(map(str, meta.get("train_patients", []))) | set(map(str, meta.get("val_patients", [])))
    )
    if test_seen:
        raise ValueError(f"{path}: model {key} saw test patients in training: {sorted(test_seen)[:10]}")


def run_infer(
    frame_index_csv: str | Path,
    split_json: str | Path,
    backbone: str,
    model_paths: dict,
    out_h5: str | Path,
    config: dict,
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    cache_paths: dict[str, str | Path] | None = None,
    scope: str = "",
) -> dict:
    """Score every frame of the index with its out-of-fold model of `scope` and write `out_h5`.

    model_paths: fold -> model file, keys "0".."K-1" and "all". Returns a small summary.
    cache_paths: video -> embedding cache (frozen encoders): the output layers score the cached
    features instead of the encoder running once per model.
    """
    if threads:
        torch.set_num_threads(int(threads))
    device = select_device(device)
    tc = config["train"]
    n_classes = len(config["classes"])
    batch_size = int(batch_size or 2 * int(tc["batch_size"]))
    workers = int(tc["num_workers"])
    model_paths = {str(k): v for k, v in model_paths.items()}
    index = read_frame_index(frame_index_csv).sort_values("frame_id", kind="stable").reset_index(drop=True)
    split = scope_split(read_json(split_json), scope)
    split_col, fold_col = assign_models(index, split)
    n = len(index)
    patients = index["patient"].astype(str).to_numpy()

    logits = np.full((n, n_classes), np.nan, np.float32)
    softmax = np.full((n, n_classes), np.nan, np.float32)
    finding_names = list(config["dataset"]["findings"])
    findings = np.full((n, len(finding_names)), np.nan, np.float32)
    embedding = embedding_all = None
    used = {}
    needed = sorted({int(f) for f in fold_col})
    keys = ["all"] + [str(f) for f in needed if f >= 0]  # `all` first: it scores every frame
    ensemble = ensemble_of(config)
    test_rows = np.flatnonzero(fold_col == -1)
    if ensemble:  # every fold model scores the test frames too
        keys = ["all"] + [str(int(f["fold"])) for f in split["folds"]]
    features = None
    if cache_paths is not None and cache_enabled(config, backbone):
        features = load_features(index, cache_paths, encoder_settings(config, backbone))[:, 0]
    blocks = trained_blocks(backbone_finetune(config, backbone))

    def score(model, image_size, rows, desc):
        if features is not None:
            return predict_features(model, features[rows], device, blocks=blocks)
        part = index if np.array_equal(rows, np.arange(n)) else index.iloc[rows]
        return predict_index(model, part, image_size, device, batch_size, workers, progress, desc)

    missing = [k for k in keys if k not in model_paths]
    if missing:
        raise ValueError(f"{backbone}: no model file for fold(s) {missing} (have {sorted(model_paths)})")
    members: dict[str, list[np.ndarray]] = {"softmax": [], "findings": []}  # the fold models' on test frames
    for key in keys:
        path = model_paths[key]
        model, meta = load_model(path, device)
        rows = np.flatnonzero(fold_col == (-1 if key == "all" else int(key)))
        _check_model(meta, key, backbone, n_classes, set(patients[rows]), split, path, finding_names)
        if features is not None and trained_blocks(str(meta.get("finetune", ""))) != blocks:
            raise ValueError(f"{path}: trained with finetune {meta.get('finetune')!r}, the cached features are "
                             f"for {backbone_finetune(config, backbone)!r}; rerun the train step")
        image_size = int(meta["image_size"])
        if key == "all":
            # one pass over all frames: test rows get their scores, every row its `embedding_all`
            lo, sm, em = score(model, image_size, np.arange(n), f"{backbone} all")
            embedding_all = em
            embedding = np.full((n, em.shape[1]), np.nan, np.float32)
            lo, sm, em = lo[rows], sm[rows], em[rows]
        else:
            both = np.concatenate([rows, test_rows]) if ensemble else rows
            lo, sm, em = score(model, image_size, both, f"{backbone} fold {key}")
            if ensemble:
                members["softmax"].append(sm[len(rows):])
                members["findings"].append(finding_probabilities(model, em[len(rows):]))
                lo, sm, em = lo[: len(rows)], sm[: len(rows)], em[: len(rows)]
        if em.shape[1] != embedding.shape[1]:
            raise ValueError(f"{path}: embedding dim {em.shape[1]} differs from the `all` model's {embedding.shape[1]}")
        logits[rows], softmax[rows], embedding[rows] = lo, sm, em
        findings[rows] = finding_probabilities(model, em)
        used[key] = {"path": str(path), "best_epoch": meta.get("best_epoch"), "n_frames": len(rows)}
        del model
    if np.isnan(softmax).any():  # pragma: no cover - assign_models guarantees coverage
        raise RuntimeError("some frames were not scored")
    if ensemble and len(test_rows):
        logits[test_rows], softmax[test_rows], findings[test_rows] = ensemble_scores(
            [softmax[test_rows], *members["softmax"]], [findings[test_rows], *members["findings"]])

    write_predictions(out_h5, Predictions(
        frame_id=index["frame_id"].to_numpy(np.int64), label=index["label"].to_numpy(np.int64),
        patient=patients, video=index["video"].astype(str).to_numpy(), split=np.asarray(split_col),
        fold=np.asarray(fold_col), logits=logits, softmax=softmax, embedding_oof=embedding,
        embedding_all=embedding_all, findings=findings,
        finding_labels=finding_targets(index, finding_names).astype(np.int8),
        attrs={"backbone": backbone, "finding_names": json.dumps(finding_names), "classes": json.dumps(list(config["classes"])),
               "config": config_json(config), "models": json.dumps(used, sort_keys=True),
               "test_scored_by": json.dumps(keys if ensemble else ["all"])},
    ))
    return {"backbone": backbone, "n_frames": n, "n_test": int((split_col == "test").sum()), "models": used}
