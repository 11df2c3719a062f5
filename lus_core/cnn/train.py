"""Training of one backbone on one cross-validation fold (or on all training patients).

`run_train` reads the frame index and split, builds the model, data, loss and optimiser from the
config, runs the loop of `lus_core.cnn.loop` and writes the rule's outputs (the model file of
`lus_core.cnn.model_file`, the per-epoch metrics and the training curve).

- Patients: fold "i" trains on `folds[i].train_patients` and validates on `folds[i].val_patients`
  of split.json. Fold "all" trains on the training patients minus a deterministic,
  patient-grouped hold-out (`holdout_patients`: about 1/K of the training patients, chosen by
  `seed` among random candidates for the class mix closest to the rest) that is used for early
  stopping exactly as a fold's validation patients are. So every model is selected the same way,
  `train.epochs` is a maximum for all of them, and the `all` model is trained like the fold
  models on about (K-1)/K of the training patients: the out-of-fold softmax that confidence
  models are fitted on is representative of the `all` model's softmax on test patients.
  Test patients are never read.
- Class imbalance (`train.class_balance`): `weighted_loss` (cross-entropy with inverse-frequency
  class weights), `sampler` (a class-balanced `WeightedRandomSampler`) or `none`.
- Loss (`train.loss`): cross-entropy, or SORD soft ordinal targets (`lus_core.cnn.losses`) that
  make a prediction one score away cheaper than one three scores away.
- What trains (`train.finetune`): the output layer on a frozen pretrained encoder, its last N
  blocks too (`{last_blocks: N}`), or every layer; from the `embed` step's cache where one applies
  (`lus_core.cnn.embedding_cache`: embeddings for a head, the last blocks' input for last blocks).
- AdamW, cosine learning-rate schedule over `train.epochs` (stepped per epoch), early stopping
  on validation macro-F1 (ties: lower validation loss) with `train.patience` (0: no early stopping,
  the best epoch is still the one kept).
- Reproducible: seeds for torch / numpy / random from `seed` + fold offset; the augmentation
  and the loader draw from their own generators.
- Resumable: after every epoch a checkpoint (model, optimiser, scheduler, scaler, history, best
  epoch, all RNG states incl. the loader's and the augmentation's generators, config) is
  written atomically into `checkpoint_dir` (outside the rule's outputs, which Snakemake deletes
  when a job fails). A restarted job with the same inputs resumes from it; on CPU the result
  equals an uninterrupted run. A checkpoint made from other inputs (fingerprint) is discarded.
  The checkpoints are deleted once the outputs are written.
- CPU by default; on CUDA automatic mixed precision (bf16 where supported, else fp16 with a
  gradient scaler) and channels_last.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

import lus_core
from lus_core import plotting
from lus_core.cnn.augment import Augment
from lus_core.cnn.backbones import LUSModel, build_model
from lus_core.cnn.checkpoints import CheckpointStore
from lus_core.cnn.device import amp_dtype_for, seed_everything, select_device
from lus_core.cnn.embedding_cache import FeatureDataset, clean_view, load_features, view_picker
from lus_core.cnn.frame_dataset import FrameDataset
from lus_core.cnn.loop import FitSettings, LoopSettings, cpu_state, fit, trained_part
from lus_core.cnn.losses import ScoreAndFindingsLoss, make_criterion
from lus_core.cnn.model_file import save_model
from lus_core.cnn.settings import (
    backbone_finetune,
    backbone_weights,
    cache_enabled,
    encoder_settings,
    trained_blocks,
)
from lus_core.frames.store import read_frame_index
from lus_core.io_utils import atomic_path, config_json, read_json, sha256_file
from lus_core.split.scopes import model_seed, scope_split

METRIC_COLUMNS = [
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
    "best", "n_train", "n_val", "seconds",
]


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (C * n_c), normalised so a balanced set gets all ones;
    a class without frames gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters, ~5x faster on CPU) where the build supports it."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fold_seed(seed: int, fold: str, n_folds: int) -> int:
    return int(seed) + (n_folds if fold == "all" else int(fold))


def holdout_patients(index: pd.DataFrame, patients: Sequence[str], k: int, seed: int, n_candidates: int = 256) -> list[str]:
    """A deterministic patient-grouped hold-out of about len(patients) / k patients, among
    `n_candidates` random draws the one whose class mix is closest to the remaining patients'."""
    patients = sorted(str(p) for p in patients)
    if len(patients) < 2:
        return []
    n_hold = min(len(patients) - 1, max(1, round(len(patients) / max(k, 2))))
    sub = index[index["patient"].isin(patients)]
    counts = sub.groupby(["patient", "label"]).size().unstack(fill_value=0).reindex(patients, fill_value=0)
    counts = counts.to_numpy(np.float64)
    total = counts.sum(0)
    rng = np.random.default_rng(seed)
    best, best_score = None, math.inf
    for _ in range(n_candidates):
        pick = np.sort(rng.permutation(len(patients))[:n_hold])
        hold = counts[pick].sum(0)
        rest = total - hold
        if hold.sum() == 0 or rest.sum() == 0:
            continue
        score = np.abs(hold / hold.sum() - rest / rest.sum()).sum()
        if score < best_score - 1e-12:
            best, best_score = pick, score
    if best is None:
        best = np.arange(n_hold)
    return [patients[i] for i in best]


def patients_for_fold(split: dict, fold: str, index: pd.DataFrame, seed: int) -> tuple[list[str], list[str], bool]:
    """(train patients, validation patients, validation is the 'all' hold-out) for a fold."""
    fold = str(fold)
    test = {str(p) for p in split["test_patients"]}
    if fold == "all":
        pool = [str(p) for p in split["train_patients"]]
        val = holdout_patients(index, pool, len(split.get("folds", [])) or 5, seed)
        train = sorted(set(pool) - set(val))
        is_holdout = True
    else:
        folds = {int(f["fold"]): f for f in split["folds"]}
        if not fold.isdigit() or int(fold) not in folds:
            raise ValueError(f"fold {fold!r} not in split.json (folds {sorted(folds)} or 'all')")
        f = folds[int(fold)]
        train, val = sorted(map(str, f["train_patients"])), sorted(map(str, f["val_patients"]))
        is_holdout = False
    leak = (set(train) | set(val)) & test
    if leak:
        raise ValueError(f"fold {fold}: test patients {sorted(leak)} in training / validation")
    if set(train) & set(val):
        raise ValueError(f"fold {fold}: patients {sorted(set(train) & set(val))} both in training and validation")
    if not train:
        raise ValueError(f"fold {fold}: no training patients")
    return train, val, is_holdout


def write_metrics(history: list[dict], csv_path: str | Path) -> None:
    df = pd.DataFrame(history, columns=METRIC_COLUMNS)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)


def plot_curves(history: list[dict], png_path: str | Path, title: str = "") -> None:
    df = pd.DataFrame(history, columns=METRIC_COLUMNS)
    fig = plotting.figure((9, 3.5))
    ax1, ax2 = plotting.subplots(fig, 1, 2)
    ax1.plot(df["epoch"], df["train_loss"], "o-", label="train")
    ax1.plot(df["epoch"], df["val_loss"], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(df["epoch"], df["train_acc"], "o-", label="train accuracy")
    ax2.plot(df["epoch"], df["val_acc"], "o-", label="validation accuracy")
    ax2.plot(df["epoch"], df["val_macro_f1"], "s--", label="validation macro-F1")
    best = df[df["best"].astype(bool)]
    if len(best):
        ax2.axvline(int(best["epoch"].iloc[-1]), color="grey", ls=":", label="kept epoch")
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="accuracy / macro-F1")
    for ax in (ax1, ax2):
        ax.legend()
    fig.suptitle(title)
    # fixed margins: a tight bounding box draws the figure once more to measure it (a third of the cost)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.14, top=0.84, wspace=0.22)
    plotting.save_png(fig, png_path, tight=False)


def _fingerprint(config: dict, backbone: str, fold: str, frame_index_csv, split_json, scope: str = "") -> str:
    h = hashlib.sha256()
    parts = (config_json(config), backbone, str(fold), sha256_file(split_json), sha256_file(frame_index_csv))
    for part in (*parts, scope) if scope else parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _json_safe(values) -> list:
    return json.loads(json.dumps(list(values), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@dataclass
class TrainingData:
    """The loaders of one fold and what they were built from."""

    train_patients: list[str]
    val_patients: list[str]
    val_is_holdout: bool
    train_ds: Dataset
    val_ds: Dataset
    train_loader: DataLoader
    val_loader: DataLoader | None
    from_cache: bool

    def close(self) -> None:
        self.train_ds.close()
        self.val_ds.close()


def training_data(index: pd.DataFrame, split: dict, backbone: str, fold: str, seed: int, config: dict,
                  model: LUSModel, device: torch.device, cache_paths: dict | None) -> TrainingData:
    """The patients of `fold`, their frames (or cached encoder features) and the loaders."""
    tc = config["train"]
    train_pat, val_pat, val_is_holdout = patients_for_fold(split, fold, index, seed)
    findings = list(config["dataset"]["findings"])
    train_idx = index[index["patient"].astype(str).isin(train_pat)]
    val_idx = index[index["patient"].astype(str).isin(val_pat)]
    from_cache = cache_paths is not None and cache_enabled(config, backbone)
    if from_cache:
        encoder = encoder_settings(config, backbone)
        train_ds, val_ds = (
            FeatureDataset(idx, load_features(idx, cache_paths, encoder), findings)
            if len(idx) else FeatureDataset(idx, np.zeros((0, 1, model.embedding_dim), np.float32), findings)
            for idx in (train_idx, val_idx)
        )
    else:
        image_size = int(tc["image_size"])
        train_ds, val_ds = (FrameDataset(idx, image_size, findings) for idx in (train_idx, val_idx))
    batch_size = int(tc["batch_size"])
    loader_gen = torch.Generator().manual_seed(seed)
    common = {"num_workers": int(tc["num_workers"]), "pin_memory": device.type == "cuda", "persistent_workers": False}
    drop_last = len(train_ds) > batch_size
    if tc["class_balance"] == "sampler":
        counts = np.bincount(train_ds.labels, minlength=len(config["classes"]))
        sample_w = 1.0 / counts[train_ds.labels]
        sampler = WeightedRandomSampler(torch.as_tensor(sample_w, dtype=torch.double), len(train_ds),
                                        replacement=True, generator=loader_gen)
        train_loader = DataLoader(train_ds, batch_size, sampler=sampler, generator=loader_gen, drop_last=drop_last,
                                  **common)
    else:
        train_loader = DataLoader(train_ds, batch_size, shuffle=True, generator=loader_gen, drop_last=drop_last,
                                  **common)
    val_loader = DataLoader(val_ds, batch_size * 2, shuffle=False, **common) if len(val_ds) else None
    return TrainingData(train_pat, val_pat, val_is_holdout, train_ds, val_ds, train_loader, val_loader, from_cache)


def training_criterion(config: dict, labels: np.ndarray, device: torch.device) -> nn.Module:
    """The score loss (class-weighted with `weighted_loss`), plus the findings' loss when configured."""
    tc = config["train"]
    n_classes = len(config["classes"])
    cw = class_weights(labels, n_classes).to(device) if tc["class_balance"] == "weighted_loss" else None
    criterion = make_criterion(tc, n_classes, cw)
    if config["dataset"]["findings"]:
        criterion = ScoreAndFindingsLoss(criterion, n_classes, float(tc["findings_weight"]))
    return criterion


def run_train(
    frame_index_csv: str | Path,
    split_json: str | Path,
    backbone: str,
    fold: str | int,
    out_model: str | Path,
    metrics_csv: str | Path,
    curve_png: str | Path,
    checkpoint_dir: str | Path,
    config: dict,
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    stop_after_epochs: int | None = None,
    progress: bool = True,
    cache_paths: dict[str, str | Path] | None = None,
    scope: str = "",
) -> dict:
    """Train `backbone` on `fold` ("0".."K-1" or "all") of `scope` (lus_core.split.scopes: the
    root, or an outer fold of nested cross-validation) and write the model, metrics and curve.

    `config`: the step's slice of the validated config (lus_core.workflow.step_config).
    Returns a summary dict (best epoch, its validation metrics, patients used).
    `stop_after_epochs` raises `TrainingInterrupted` after that many epochs of this call (tests).
    `cache_paths` (video -> embedding cache file, `lus_core.cnn.embedding_cache`): for a frozen encoder,
    the output layer trains on the cached features instead of running the encoder every epoch;
    the model file is the same full model either way.
    """
    fold = str(fold)
    tc = config["train"]
    classes = list(config["classes"])
    n_classes = len(classes)
    if threads:
        torch.set_num_threads(int(threads))
    index = read_frame_index(frame_index_csv)
    split = scope_split(read_json(split_json), scope)
    seed = fold_seed(model_seed(config), fold, len(split.get("folds", [])))  # the replica's (train.seeds)
    bad = index["label"][(index["label"] < 0) | (index["label"] >= n_classes)]
    if len(bad):
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; found {sorted(set(bad))[:5]}")

    seed_everything(seed)
    device = select_device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    weights, finetune = backbone_weights(config, backbone), backbone_finetune(config, backbone)
    findings = list(config["dataset"]["findings"])
    model = build_model(backbone, n_classes, weights, finetune, findings)
    model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    data = training_data(index, split, backbone, fold, seed, config, model, device, cache_paths)
    aug_gen = torch.Generator().manual_seed(seed + 7919)
    criterion = training_criterion(config, data.train_ds.labels, device)
    trained = trained_part(model, data.from_cache)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], float(tc["lr"]),
                               float(tc["weight_decay"]))
    epochs = int(tc["epochs"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    amp_dtype = amp_dtype_for(device)
    augment = Augment(tc["augment"])
    loop = LoopSettings(
        device=device, augment=augment if augment.cfg.active else None, aug_generator=aug_gen, amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None, channels_last=cuda,
        progress=progress,
        prepare_train=view_picker(device, aug_gen) if data.from_cache else None,
        prepare_eval=clean_view(device) if data.from_cache else None,
    )
    checkpoints = CheckpointStore(checkpoint_dir)
    cfg_str = config_json(config)
    result = fit(trained, data.train_loader, data.val_loader, criterion, optimizer, scheduler, loop, FitSettings(
        epochs=epochs, patience=int(tc["patience"]), checkpoints=checkpoints,
        fingerprint=_fingerprint(config, backbone, fold, frame_index_csv, split_json, scope), config_str=cfg_str,
        stop_after_epochs=stop_after_epochs,
    ))
    if trained is not model:  # the trained output layer(s) back into the full model
        trained.load_state_dict(result["best_state"])
        result["best_state"] = cpu_state(model)
    history = result["history"]
    best_row = next((r for r in history if r["epoch"] == result["best_epoch"]), {})
    best_metrics = {k: float(best_row[k]) for k in ("val_loss", "val_acc", "val_macro_f1", "train_loss", "train_acc")
                    if k in best_row}
    meta = {
        "backbone": backbone,
        "fold": fold,
        **({"scope": scope} if scope else {}),
        "classes": _json_safe(classes),
        "n_classes": n_classes,
        "image_size": int(tc["image_size"]),
        "embedding_dim": int(model.embedding_dim),
        "weights": weights,
        "finetune": finetune,
        "train_patients": data.train_patients,
        "val_patients": data.val_patients,
        "val_is_holdout": data.val_is_holdout,
        "best_epoch": int(result["best_epoch"]),
        "epochs_run": len(history),
        "stopped_early": bool(result["stopped_early"]),
        "best_metrics": best_metrics,
        "class_balance": tc["class_balance"],
        "loss": str(tc["loss"]),
        "finding_names": findings,
        "trained_from": ("block_cache" if trained_blocks(finetune) else "embedding_cache") if data.from_cache else "frames",
        "seed": seed,
        "n_train_frames": len(data.train_ds),
        "n_val_frames": len(data.val_ds),
        "config": cfg_str,
        "lus_core_version": lus_core.__version__,
        "torch_version": str(torch.__version__),
    }
    save_model(out_model, result["best_state"], meta)
    write_metrics(history, metrics_csv)
    plot_curves(history, curve_png, title=f"{backbone} fold {fold}")
    checkpoints.clear()
    data.close()
    return {k: v for k, v in meta.items() if k != "config"}
