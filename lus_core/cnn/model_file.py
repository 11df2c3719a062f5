"""The model file contract: ``models/{backbone}/{fold}.pt``, one trained model with what it was
trained on (`train` writes it, `infer`, `lus predict` and Grad-CAM read it).

A dict saved with ``torch.save``: ``state_dict`` (the full model: encoder and output layers) and
metadata (backbone, fold, classes, n_classes, image_size, embedding_dim, weights, finetune, the
patients it trained and validated on, best epoch and its metrics, loss, finding_names, seed,
config, versions). It loads with ``torch.load(weights_only=True)``: tensors and plain values only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lus_core.cnn.backbones import LUSModel, build_model
from lus_core.io_utils import atomic_path


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict) -> None:
    """Write a model file atomically (a crash leaves the previous file or none)."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict, **meta}, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[LUSModel, dict]:
    """A model file -> (model in eval mode on `device`, metadata without the weights)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "state_dict" not in obj or "backbone" not in obj:
        raise ValueError(f"{path}: not a model file written by lus_core.cnn.train (needs state_dict, backbone)")
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    model = build_model(meta["backbone"], int(meta["n_classes"]), weights="none", finetune="all",
                        findings=meta.get("finding_names", []))
    model.load_state_dict(obj["state_dict"], strict=True)
    model.to(torch.device(device)).eval()
    return model, meta
