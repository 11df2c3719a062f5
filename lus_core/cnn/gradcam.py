"""Grad-CAM: where the CNN looked when it scored a frame (pytorch-grad-cam's ``GradCAM``).

POCOVID-Net, the main public LUS tool, shows this map; a clinician deciding whether to trust a
score looks at it next to the gallery of similar training frames.

- :func:`gradcam_maps`: uint8 frames (N, H, W, C) and a model -> maps (N, H, W) in [0, 1] for
  the class the CNN chose (or given classes), same preprocessing as inference.
- :func:`gradcam_overlay`: a frame and its map -> a uint8 RGB image (a gallery tile).
- ``lus predict --gradcam`` (lus_core.runs.predict.gradcam_tiles): the overlay as an extra tile of each gallery row.
- the workflow step ``gradcam`` (lus_core.report.gradcam_step): the maps of the report's gallery
  frames.

Target layer per backbone (:data:`TARGET_LAYERS`): the last convolutional feature map before
global pooling, where spatial detail and class evidence meet.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from lus_core.cnn.backbones import LUSModel
from lus_core.cnn.frame_dataset import frames_to_tensor, prepare_batch
from lus_core.io_utils import atomic_path

__all__ = ["TARGET_LAYERS", "target_layer", "gradcam_maps", "gradcam_overlay", "write_png"]

# module paths inside an LUSModel (see lus_core.cnn.backbones); each is called once per forward
TARGET_LAYERS = {
    "resnet18": "net.layer4.1",  # last residual block (the last stage's output), 7x7 at 224 px
    "vgg16": "net.features.29",  # ReLU after conv5_3, before the last max-pool
    "squeezenet1_1": "net.features.12",  # last Fire module
    "efficientnet_lite0": "net._bn1",  # head conv + BN (its activation module is shared with the stem)
    "efficientnet_lite1": "net._bn1",
    "efficientnet_lite2": "net._bn1",
    "scratch": "net.features.26",  # ReLU of the last block, before its max-pool
}


def target_layer(model: LUSModel) -> nn.Module:
    if model.backbone not in TARGET_LAYERS:
        raise ValueError(f"no Grad-CAM target layer for backbone {model.backbone!r}")
    return model.get_submodule(TARGET_LAYERS[model.backbone])


def gradcam_maps(
    model: LUSModel,
    frames_uint8: np.ndarray,
    image_size: int,
    classes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] at the frames' own size.

    ``classes``: the class whose evidence is shown per frame; default the CNN's score.  Works with
    frozen backbones too (gradients flow from the input), leaves the model's parameters unchanged.
    """

    frames_uint8 = np.asarray(frames_uint8)
    n, h, w = frames_uint8.shape[:3]
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = np.zeros((n, h, w), np.float32)
    try:
        with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
            cam.compute_input_gradient = True  # frozen backbones: the gradient path starts at the input
            for start in range(0, n, batch_size):
                chunk = frames_uint8[start : start + batch_size]
                x = prepare_batch(frames_to_tensor(chunk, image_size), device)
                if classes is None:
                    with torch.no_grad():
                        cls = model(x).argmax(1).tolist()
                else:
                    cls = [int(c) for c in classes[start : start + len(chunk)]]
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in cls])
                for j, m in enumerate(maps):
                    out[start + j] = cv2.resize(np.nan_to_num(m.astype(np.float32)), (w, h),
                                                interpolation=cv2.INTER_LINEAR)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.clip(out, 0.0, 1.0)


def gradcam_overlay(frame_uint8: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The frame in gray with the map as a JET heat overlay: uint8 RGB (H, W, 3)."""
    frame = np.asarray(frame_uint8)
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    rgb = np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"map shape {cam.shape} differs from the frame's {rgb.shape[:2]}")
    heat = cv2.applyColorMap(np.uint8(np.round(255 * np.clip(cam, 0, 1))), cv2.COLORMAP_JET)[..., ::-1]
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """An RGB uint8 image as a png, atomically."""

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: png encoding failed")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())
    return Path(path)
