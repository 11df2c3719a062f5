"""The training loop, torchvision-reference style: `train_one_epoch`, `evaluate` and `fit` are
plain functions; what they share travels in two settings objects instead of long argument lists.

- :class:`LoopSettings`: how a batch is computed (device, mixed precision, augmentation, and how a
  loader batch becomes model input: frames, or cached encoder features).
- :class:`FitSettings`: how long and how it is kept (epochs, early stopping, checkpoints).

Early stopping on validation macro-F1 (ties: lower validation loss) with `patience`; the best
epoch's weights are kept. After every epoch a checkpoint (model, optimiser, scheduler, scaler,
history, best epoch, every RNG state including the loader's and the augmentation's generators)
is written atomically; a restarted training with the same fingerprint resumes from it and, on
the CPU, ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lus_core.cnn.augment import Augment
from lus_core.cnn.backbones import LUSModel
from lus_core.cnn.checkpoints import CheckpointStore, get_rng_state, say, set_rng_state
from lus_core.cnn.frame_dataset import prepare_batch
from lus_core.cnn.losses import score_part
from lus_core.cnn.settings import trained_blocks
from lus_core.metrics import macro_f1

Prepare = Callable[[torch.Tensor], torch.Tensor]


class TrainingInterrupted(RuntimeError):
    """Raised by `fit` with `FitSettings.stop_after_epochs`: simulates a job killed after a checkpoint."""


@dataclass
class LoopSettings:
    """How one batch is computed. `prepare_train` / `prepare_eval` turn a loader batch into model
    input (default: uint8 frames -> augmented (training only), normalised float; cached features
    bring their own)."""

    device: torch.device
    augment: Augment | None = None
    aug_generator: torch.Generator | None = None
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    progress: bool = True
    prepare_train: Prepare | None = None
    prepare_eval: Prepare | None = None

    def train_input(self, xb: torch.Tensor) -> torch.Tensor:
        if self.prepare_train is not None:
            return self.prepare_train(xb)
        return prepare_batch(xb, self.device, self.augment, self.aug_generator, self.channels_last)

    def eval_input(self, xb: torch.Tensor) -> torch.Tensor:
        if self.prepare_eval is not None:
            return self.prepare_eval(xb)
        return prepare_batch(xb, self.device, channels_last=self.channels_last)


@dataclass
class FitSettings:
    """How long a training runs and how it is kept: up to `epochs`, early stopping after
    `patience` epochs without improvement, a checkpoint per epoch (`fingerprint`: the inputs and
    config it belongs to), `stop_after_epochs` (tests: raise TrainingInterrupted), `on_epoch`
    (called with each epoch's row)."""

    epochs: int
    patience: int
    checkpoints: CheckpointStore | None = None
    fingerprint: str = ""
    config_str: str = "{}"
    stop_after_epochs: int | None = None
    on_epoch: Callable[[dict], None] | None = None


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    loop: LoopSettings, desc: str = "train") -> dict:
    """One pass over `loader`: {"loss", "acc", "n"}."""
    device = loop.device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    # the per-batch bar only on a terminal; logs get the epoch bar and one line per epoch
    batch_bar = loop.progress and sys.stderr.isatty()
    for xb, yb, _ in tqdm(loader, desc=desc, leave=False, disable=not batch_bar, file=sys.stderr):
        x = loop.train_input(xb)
        y = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=loop.amp_dtype, enabled=loop.amp_dtype is not None):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if loop.scaler is not None:
            loop.scaler.scale(loss).backward()
            loop.scaler.step(optimizer)
            loop.scaler.update()
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
def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, loop: LoopSettings) -> dict:
    """Loss, accuracy and macro-F1 (over the classes present in labels or predictions)."""
    model.eval()
    loss_sum, preds, labels = 0.0, [], []
    for xb, yb, _ in loader:
        x = loop.eval_input(xb)
        y = yb.to(loop.device, non_blocking=True)
        with torch.autocast(loop.device.type, dtype=loop.amp_dtype, enabled=loop.amp_dtype is not None):
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


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU."""
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


class CachedTail(nn.Module):
    """The last blocks and the output layer(s) of a `last_blocks:N` model, from the cached
    activations before those blocks (lus_core.cnn.embedding_cache): the same computation as the
    whole model with its earlier blocks frozen. Only the trained modules are its submodules, so
    its state (checkpoints, the best epoch's) holds no frozen weights."""

    def __init__(self, model: LUSModel, n_last: int):
        super().__init__()
        self.parts = nn.ModuleList(model.trainable_modules())
        self._model = [model]  # a plain list: the frozen part is not a submodule
        self.n_last = n_last

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        model = self._model[0]
        logits, emb = model.from_activations(activations, self.n_last)
        if model.findings_head is None:
            return logits
        return torch.cat([logits, model.findings_head(emb)], dim=1)


def trained_part(model: LUSModel, from_cache: bool) -> nn.Module:
    """The module `fit` trains: the output layer(s) on cached features (or the last blocks on
    cached activations), else the model; with findings, a wrapper that also returns the finding
    logits."""
    blocks = trained_blocks(model.finetune)
    if from_cache and blocks:
        return CachedTail(model, blocks)
    if model.findings_head is None:
        return model.head if from_cache else model
    return CachedScoreAndFindings(model) if from_cache else ScoreAndFindings(model)


class _Progress:
    """The best epoch so far and the early-stopping count (restored from a checkpoint)."""

    def __init__(self):
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.best_epoch = 0
        self.best_f1, self.best_loss = -math.inf, math.inf
        self.since_best = 0

    def update(self, model: nn.Module, epoch: int, va: dict) -> bool:
        improved = _better(va["macro_f1"], va["loss"], self.best_f1, self.best_loss)
        if improved:
            self.best_state, self.best_epoch = cpu_state(model), epoch + 1
            self.best_f1 = -math.inf if math.isnan(va["macro_f1"]) else va["macro_f1"]
            self.best_loss = va["loss"]
            self.since_best = 0
        else:
            self.since_best += 1
        return improved


def _resume(progress: _Progress, model, optimizer, scheduler, loop: LoopSettings, fit: FitSettings, generators) -> None:
    resumed = fit.checkpoints.load(fit.fingerprint) if fit.checkpoints is not None else None
    if resumed is None:
        return
    state, progress.best_state = resumed
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if loop.scaler is not None and state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    progress.history = list(state["history"])
    progress.best_epoch, progress.best_f1, progress.best_loss = state["best_epoch"], state["best_f1"], state["best_loss"]
    progress.since_best = state["since_best"]
    set_rng_state(state["rng"], generators)  # last: nothing may draw between here and the loop
    say(f"resumed from {fit.checkpoints.last} after epoch {len(progress.history)}")


def _checkpoint(progress: _Progress, model, optimizer, scheduler, loop: LoopSettings, fit: FitSettings, generators,
                improved: bool) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else {},
        "history": progress.history,
        "best_f1": progress.best_f1,
        "best_loss": progress.best_loss,
        "since_best": progress.since_best,
        "rng": get_rng_state(generators),
        "fingerprint": fit.fingerprint,
        "config": fit.config_str,
    }
    fit.checkpoints.save(state, progress.best_state, progress.best_epoch, best_changed=improved)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, criterion: nn.Module,
        optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
        loop: LoopSettings, settings: FitSettings) -> dict:
    """Train up to `settings.epochs` epochs with early stopping; resume from its checkpoints if present.

    Returns {"best_state", "best_epoch", "history", "stopped_early"}; `best_state` is the state
    dict (on the CPU) of the epoch with the best validation macro-F1.
    """
    generators = {"augment": loop.aug_generator, "loader": train_loader.generator}
    generators = {k: g for k, g in generators.items() if g is not None}
    progress = _Progress()
    _resume(progress, model, optimizer, scheduler, loop, settings, generators)
    epochs, patience = settings.epochs, settings.patience
    start, ran = len(progress.history), 0
    bar = tqdm(range(start, epochs), desc="epochs", initial=start, total=epochs, disable=not loop.progress,
               file=sys.stderr)
    for epoch in bar:
        if progress.since_best >= patience:
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, criterion, optimizer, train_loader, loop, desc=f"epoch {epoch + 1}")
        scheduler.step()
        va = (evaluate(model, criterion, val_loader, loop) if val_loader is not None
              else {"loss": math.nan, "acc": math.nan, "macro_f1": math.nan, "n": 0})
        improved = progress.update(model, epoch, va)
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": va["loss"], "val_acc": va["acc"], "val_macro_f1": va["macro_f1"],
            "best": improved, "n_train": tr["n"], "n_val": va["n"], "seconds": time.perf_counter() - t0,
        }
        progress.history.append(row)
        bar.set_postfix(loss=f"{tr['loss']:.3f}", val_f1=f"{va['macro_f1']:.3f}")
        if loop.progress:
            say(f"epoch {epoch + 1}/{epochs}: train loss {tr['loss']:.4f} acc {tr['acc']:.3f} | "
                f"val loss {va['loss']:.4f} acc {va['acc']:.3f} macro-F1 {va['macro_f1']:.3f}"
                + (" *" if improved else ""))
        if settings.checkpoints is not None:
            _checkpoint(progress, model, optimizer, scheduler, loop, settings, generators, improved)
        if settings.on_epoch is not None:
            settings.on_epoch(row)
        ran += 1
        finished = epoch + 1 >= epochs or progress.since_best >= patience
        if settings.stop_after_epochs is not None and ran >= settings.stop_after_epochs and not finished:
            raise TrainingInterrupted(f"stopped after {ran} epoch(s) as asked (epoch {epoch + 1} of {epochs})")
    bar.close()
    if progress.best_state is None:  # epochs == 0
        progress.best_state = cpu_state(model)
    return {
        "best_state": progress.best_state,
        "best_epoch": progress.best_epoch,
        "history": progress.history,
        "stopped_early": len(progress.history) < epochs,
    }
