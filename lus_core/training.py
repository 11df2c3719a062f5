"""Training of one backbone on one cross-validation fold (or on all training patients).

Plain torchvision-reference style: `train_one_epoch`, `evaluate` and `fit` are ordinary
functions; `run_train` reads the frame index and split, builds everything from the config and
writes the rule's outputs.

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
- Loss (`train.loss`): cross-entropy, or SORD soft ordinal targets (`lus_core.losses`) that
  make a prediction one score away cheaper than one three scores away.
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
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

import lus_core
from lus_core.augment import Augment
from lus_core.backbone_settings import cache_enabled, effective_finetune, encoder_settings, per_backbone
from lus_core.dataset import FrameDataset, prepare_batch
from lus_core.embed_cache import FeatureDataset, clean_view, load_features, view_picker
from lus_core.frame_store import read_frame_index
from lus_core.io_utils import atomic_path, config_json, read_json, sha256_file
from lus_core.losses import ScoreAndFindingsLoss, make_criterion, score_part
from lus_core.metrics import macro_f1
from lus_core.models import LUSModel, build_model

CLASS_BALANCE = ("weighted_loss", "sampler", "none")
METRIC_COLUMNS = [
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
    "best", "n_train", "n_val", "seconds",
]


class TrainingInterrupted(RuntimeError):
    """Raised by `fit(stop_after_epochs=...)`: simulates a job killed after a checkpoint."""


# ---------------------------------------------------------------------------------------------
# small pieces


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


# ---------------------------------------------------------------------------------------------
# RNG state (as plain lists / tensors, so checkpoints load with weights_only=True)


def get_rng_state(generators: dict[str, torch.Generator]) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# checkpoints


class CheckpointStore:
    """`last.pt` (everything but the best weights) + `best-{epoch}.pt` (best weights so far).

    Both are written atomically; `last.pt` names the best file it belongs to, and older best
    files are removed only after `last.pt` points past them, so a crash at any moment leaves a
    consistent pair.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def best_path(self, epoch: int) -> Path:
        return self.dir / f"best-{epoch}.pt"

    def save(self, state: dict, best_state: dict | None, best_epoch: int, best_changed: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if best_changed and best_state is not None:
            with atomic_path(self.best_path(best_epoch)) as tmp:
                torch.save(best_state, tmp)
        with atomic_path(self.last) as tmp:
            torch.save({**state, "best_epoch": best_epoch}, tmp)
        for p in self.dir.glob("best-*.pt"):
            if p != self.best_path(best_epoch):
                p.unlink(missing_ok=True)

    def load(self, fingerprint: str) -> tuple[dict, dict | None] | None:
        if not self.last.exists():
            return None
        try:
            state = torch.load(self.last, map_location="cpu", weights_only=True)
            best_file = self.best_path(state["best_epoch"])
            best = torch.load(best_file, map_location="cpu", weights_only=True) if best_file.exists() else None
        except Exception as e:  # a corrupt checkpoint is not worth failing the job for
            _say(f"ignoring unreadable checkpoint in {self.dir}: {e}")
            return None
        if state.get("fingerprint") != fingerprint:
            _say(f"ignoring checkpoint in {self.dir}: made from other inputs or config")
            return None
        if state["best_epoch"] > 0 and best is None:
            _say(f"ignoring checkpoint in {self.dir}: best weights file missing")
            return None
        return state, best

    def clear(self) -> None:
        if self.dir.exists():
            for p in [*self.dir.glob("last.pt"), *self.dir.glob("best-*.pt")]:
                p.unlink(missing_ok=True)


def _say(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the loop


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    *,
    augment: Augment | None = None,
    aug_generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "train",
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """One pass over `loader`. `prepare` turns a loader batch into model input (default: uint8
    frames -> augmented, normalised float; cached features bring their own)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    # the per-batch bar only on a terminal; logs get the epoch bar and one line per epoch
    batch_bar = progress and sys.stderr.isatty()
    for xb, yb, _ in tqdm(loader, desc=desc, leave=False, disable=not batch_bar, file=sys.stderr):
        x = prepare(xb) if prepare is not None else prepare_batch(xb, device, augment, aug_generator, channels_last)
        y = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        score_logits, classes = score_part(logits.detach(), y)
        loss_sum += loss.detach() * len(y)
        correct += (score_logits.argmax(1) == classes).sum()
        n += len(y)
    if n == 0:
        raise ValueError("empty training loader")
    return {"loss": float(loss_sum) / n, "acc": float(correct) / n, "n": n}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Loss, accuracy and macro-F1 (over the classes present in labels or predictions)."""
    model.eval()
    loss_sum, preds, labels = 0.0, [], []
    for xb, yb, _ in loader:
        x = prepare(xb) if prepare is not None else prepare_batch(xb, device, channels_last=channels_last)
        y = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()
        loss_sum += float(criterion(logits, y)) * len(y)
        score_logits, classes = score_part(logits, yb)
        preds.append(score_logits.argmax(1).cpu())
        labels.append(classes)
    if not labels:
        return {"loss": math.nan, "acc": math.nan, "macro_f1": math.nan, "n": 0}
    p, y = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    return {
        "loss": loss_sum / len(y),
        "acc": float((p == y).mean()),
        "macro_f1": float(macro_f1(y, p)),
        "n": len(y),
    }


def _better(f1: float, loss: float, best_f1: float, best_loss: float) -> bool:
    if math.isnan(f1):
        return True  # no validation: the latest epoch is the one kept
    if f1 > best_f1 + 1e-12:
        return True
    return abs(f1 - best_f1) <= 1e-12 and loss < best_loss


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class ScoreAndFindings(nn.Module):
    """What trains when findings are configured: the model's (N, C + F) outputs, end to end."""

    def __init__(self, model: LUSModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.score_and_findings(x)


class CachedScoreAndFindings(nn.Module):
    """The same from cached frozen-encoder embeddings: only the two output layers (so that
    checkpoints hold no encoder)."""

    def __init__(self, model: LUSModel):
        super().__init__()
        self.head, self.findings_head = model.head, model.findings_head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head(features), self.findings_head(features)], dim=1)


def trained_part(model: LUSModel, from_cache: bool) -> nn.Module:
    """The module `fit` trains: the output layer(s) on cached features, else the model; with
    findings, a wrapper that also returns the finding logits."""
    if model.findings_head is None:
        return model.head if from_cache else model
    return CachedScoreAndFindings(model) if from_cache else ScoreAndFindings(model)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epochs: int,
    patience: int,
    device: torch.device,
    augment: Augment | None = None,
    aug_generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    checkpoints: CheckpointStore | None = None,
    fingerprint: str = "",
    config_str: str = "{}",
    stop_after_epochs: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    prepare_train: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prepare_eval: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Train up to `epochs` epochs with early stopping; resume from `checkpoints` if present.

    Returns {"best_state", "best_epoch", "history", "stopped_early"}; `best_state` is the state
    dict (on the CPU) of the epoch with the best validation macro-F1.
    """
    generators = {"augment": aug_generator, "loader": train_loader.generator}
    generators = {k: g for k, g in generators.items() if g is not None}
    history: list[dict] = []
    best_state, best_epoch = None, 0
    best_f1, best_loss = -math.inf, math.inf
    since_best = 0
    resumed = checkpoints.load(fingerprint) if checkpoints is not None else None
    if resumed is not None:
        state, best_state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best_epoch, best_f1, best_loss = state["best_epoch"], state["best_f1"], state["best_loss"]
        since_best = state["since_best"]
        set_rng_state(state["rng"], generators)  # last: nothing may draw between here and the loop
        _say(f"resumed from {checkpoints.last} after epoch {len(history)}")
    start = len(history)
    ran = 0
    bar = tqdm(range(start, epochs), desc="epochs", initial=start, total=epochs, disable=not progress, file=sys.stderr)
    for epoch in bar:
        if since_best >= patience:
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(
            model, criterion, optimizer, train_loader, device, augment=augment, aug_generator=aug_generator,
            amp_dtype=amp_dtype, scaler=scaler, channels_last=channels_last, progress=progress,
            desc=f"epoch {epoch + 1}", prepare=prepare_train,
        )
        scheduler.step()
        va = (
            evaluate(
                model, criterion, val_loader, device, amp_dtype=amp_dtype, channels_last=channels_last,
                prepare=prepare_eval,
            )
            if val_loader is not None
            else {"loss": math.nan, "acc": math.nan, "macro_f1": math.nan, "n": 0}
        )
        improved = _better(va["macro_f1"], va["loss"], best_f1, best_loss)
        if improved:
            best_state, best_epoch = _cpu_state(model), epoch + 1
            best_f1 = -math.inf if math.isnan(va["macro_f1"]) else va["macro_f1"]
            best_loss = va["loss"]
            since_best = 0
        else:
            since_best += 1
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": va["loss"], "val_acc": va["acc"], "val_macro_f1": va["macro_f1"],
            "best": improved, "n_train": tr["n"], "n_val": va["n"], "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        bar.set_postfix(loss=f"{tr['loss']:.3f}", val_f1=f"{va['macro_f1']:.3f}")
        if progress:
            _say(
                f"epoch {epoch + 1}/{epochs}: train loss {tr['loss']:.4f} acc {tr['acc']:.3f} | "
                f"val loss {va['loss']:.4f} acc {va['acc']:.3f} macro-F1 {va['macro_f1']:.3f}"
                + (" *" if improved else "")
            )
        if checkpoints is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "history": history,
                "best_f1": best_f1,
                "best_loss": best_loss,
                "since_best": since_best,
                "rng": get_rng_state(generators),
                "fingerprint": fingerprint,
                "config": config_str,
            }
            checkpoints.save(state, best_state, best_epoch, best_changed=improved)
        if on_epoch is not None:
            on_epoch(row)
        ran += 1
        finished = epoch + 1 >= epochs or since_best >= patience
        if stop_after_epochs is not None and ran >= stop_after_epochs and not finished:
            raise TrainingInterrupted(f"stopped after {ran} epoch(s) as asked (epoch {epoch + 1} of {epochs})")
    bar.close()
    if best_state is None:  # epochs == 0
        best_state = _cpu_state(model)
    return {
        "best_state": best_state,
        "best_epoch": best_epoch,
        "history": history,
        "stopped_early": len(history) < epochs,
    }


# ---------------------------------------------------------------------------------------------
# outputs


def write_metrics(history: list[dict], csv_path: str | Path) -> None:
    df = pd.DataFrame(history, columns=METRIC_COLUMNS)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)


def plot_curves(history: list[dict], png_path: str | Path, title: str = "") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = pd.DataFrame(history, columns=METRIC_COLUMNS)
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
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
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    # fixed margins: tight_layout draws the figure once more to measure it (a third of the cost)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.14, top=0.84, wspace=0.22)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _fingerprint(config: dict, backbone: str, fold: str, frame_index_csv, split_json) -> str:
    h = hashlib.sha256()
    for part in (config_json(config), backbone, str(fold), sha256_file(split_json), sha256_file(frame_index_csv)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _json_safe(values) -> list:
    return json.loads(json.dumps(list(values), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


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
) -> dict:
    """Train `backbone` on `fold` ("0".."K-1" or "all") and write the model, metrics and curve.

    Returns a summary dict (best epoch, its validation metrics, patients used).
    `stop_after_epochs` raises `TrainingInterrupted` after that many epochs of this call (tests).
    `cache_paths` (video -> embedding cache file, `lus_core.embed_cache`): for a frozen encoder,
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
    split = read_json(split_json)
    n_folds = len(split.get("folds", []))
    seed = fold_seed(config.get("seed", 0), fold, n_folds)
    train_pat, val_pat, val_is_holdout = patients_for_fold(split, fold, index, seed)
    bad = index["label"][(index["label"] < 0) | (index["label"] >= n_classes)]
    if len(bad):
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; found {sorted(set(bad))[:5]}")
    balance = tc.get("class_balance", "weighted_loss")
    if balance not in CLASS_BALANCE:
        raise ValueError(f"train.class_balance must be one of {CLASS_BALANCE}, got {balance!r}")

    seed_everything(seed)
    device = select_device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    weights = str(per_backbone(tc.get("weights", "none"), backbone, "none"))
    finetune = effective_finetune(backbone, weights, str(per_backbone(tc.get("finetune", "head"), backbone, "head")))
    findings = list(config["dataset"].get("findings") or {})
    model = build_model(backbone, n_classes, weights, finetune, findings)
    model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)

    image_size = int(tc["image_size"])
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
        train_ds, val_ds = (FrameDataset(idx, image_size, findings) for idx in (train_idx, val_idx))
    batch_size = int(tc["batch_size"])
    workers = int(tc.get("num_workers", 0))
    loader_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 7919)
    common = {"num_workers": workers, "pin_memory": cuda, "persistent_workers": False}
    if balance == "sampler":
        counts = np.bincount(train_ds.labels, minlength=n_classes)
        sample_w = 1.0 / counts[train_ds.labels]
        sampler = WeightedRandomSampler(torch.as_tensor(sample_w, dtype=torch.double), len(train_ds), replacement=True, generator=loader_gen)
        train_loader = DataLoader(train_ds, batch_size, sampler=sampler, generator=loader_gen, drop_last=len(train_ds) > batch_size, **common)
    else:
        train_loader = DataLoader(train_ds, batch_size, shuffle=True, generator=loader_gen, drop_last=len(train_ds) > batch_size, **common)
    val_loader = DataLoader(val_ds, batch_size * 2, shuffle=False, **common) if len(val_ds) else None

    cw = class_weights(train_ds.labels, n_classes).to(device) if balance == "weighted_loss" else None
    criterion = make_criterion(tc, n_classes, cw)
    if findings:
        criterion = ScoreAndFindingsLoss(criterion, n_classes, float(tc.get("findings_weight", 0.5)))
    trained = trained_part(model, from_cache)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, float(tc["lr"]), float(tc.get("weight_decay", 0.0)))
    epochs = int(tc["epochs"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    amp_dtype = amp_dtype_for(device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    augment = Augment(tc.get("augment", {}))
    cfg_str = config_json(config)
    checkpoints = CheckpointStore(checkpoint_dir)

    result = fit(
        trained, train_loader, val_loader, criterion, optimizer, scheduler,
        epochs=epochs, patience=int(tc.get("patience", 0)) or epochs, device=device,
        augment=augment if augment.cfg.active else None, aug_generator=aug_gen,
        amp_dtype=amp_dtype, scaler=scaler, channels_last=cuda, checkpoints=checkpoints,
        fingerprint=_fingerprint(config, backbone, fold, frame_index_csv, split_json), config_str=cfg_str,
        stop_after_epochs=stop_after_epochs, progress=progress,
        prepare_train=view_picker(device, aug_gen) if from_cache else None,
        prepare_eval=clean_view(device) if from_cache else None,
    )
    if trained is not model:  # the trained output layer(s) back into the full model
        trained.load_state_dict(result["best_state"])
        result["best_state"] = _cpu_state(model)
    history = result["history"]
    best_row = next((r for r in history if r["epoch"] == result["best_epoch"]), {})
    best_metrics = {k: float(best_row[k]) for k in ("val_loss", "val_acc", "val_macro_f1", "train_loss", "train_acc") if k in best_row}
    meta = {
        "backbone": backbone,
        "fold": fold,
        "classes": _json_safe(classes),
        "n_classes": n_classes,
        "image_size": image_size,
        "embedding_dim": int(model.embedding_dim),
        "weights": weights,
        "finetune": finetune,
        "train_patients": train_pat,
        "val_patients": val_pat,
        "val_is_holdout": val_is_holdout,
        "best_epoch": int(result["best_epoch"]),
        "epochs_run": len(history),
        "stopped_early": bool(result["stopped_early"]),
        "best_metrics": best_metrics,
        "class_balance": balance,
        "loss": str(tc.get("loss", "ce")),
        "finding_names": findings,
        "trained_from": "embedding_cache" if from_cache else "frames",
        "seed": seed,
        "n_train_frames": len(train_ds),
        "n_val_frames": len(val_ds),
        "config": cfg_str,
        "lus_core_version": lus_core.__version__,
        "torch_version": str(torch.__version__),
    }
    with atomic_path(out_model) as tmp:
        torch.save({"state_dict": result["best_state"], **meta}, tmp)
    write_metrics(history, metrics_csv)
    plot_curves(history, curve_png, title=f"{backbone} fold {fold}")
    checkpoints.clear()
    train_ds.close()
    val_ds.close()
    return {k: v for k, v in meta.items() if k != "config"}

