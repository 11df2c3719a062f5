"""The ``gradcam`` step: where the selected configuration's CNN looked in each gallery frame of the
report (lus_core.cnn.gradcam), ``gradcam/gradcam_XX.png`` plus ``gradcam/index.json`` (which
gallery, frame, backbone, class)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lus_core.cnn.gradcam import gradcam_maps, gradcam_overlay, write_png
from lus_core.cnn.infer import predict_frames
from lus_core.cnn.model_file import load_model
from lus_core.evaluation.summary import read_summary
from lus_core.frames.decode import grey
from lus_core.frames.store import frames_by_id, read_frame_index
from lus_core.io_utils import write_json


def run_gradcam_step(summary_json, models: Mapping[str, str | os.PathLike], frame_index_csv,
                     out_index_json, device: str = "cpu") -> Path:
    """Grad-CAM of every gallery frame of ``eval/summary.json``, with the selected configuration's model.

    Writes ``gradcam_XX.png`` beside ``out_index_json`` and the index: a list of {"gallery" (the
    gallery's file as in the summary), "frame_id", "file", "backbone", "class", "title", "caption"}.
    """
    summary = read_summary(summary_json)
    chosen = summary.get("selected") or {}
    galleries = [g for g in summary.get("galleries") or [] if "frame_id" in g]
    out_dir = Path(out_index_json).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    backbone = chosen.get("backbone")
    if galleries and backbone:
        if backbone not in models:
            raise ValueError(f"{summary_json}: configuration backbone {backbone!r} has no model among {sorted(models)}")
        model, meta = load_model(models[backbone], device)
        # Grey, as the CNN sees them: a gallery may mix grey and colour videos' frames.
        stored = frames_by_id(read_frame_index(frame_index_csv), [int(g["frame_id"]) for g in galleries])
        frames = np.concatenate([grey(f[None]) for f in stored])
        image_size = int(meta.get("image_size") or frames.shape[1])
        with torch.no_grad():
            cls = predict_frames(model, frames, image_size, device)[1].argmax(1)
        maps = gradcam_maps(model, frames, image_size, cls, device)
        classes = summary.get("classes") or list(range(int(cls.max()) + 1))
        for j, (g, frame, cam) in enumerate(zip(galleries, stored, maps, strict=True)):
            png = write_png(out_dir / f"gradcam_{j:02d}.png", gradcam_overlay(frame, cam))
            entries.append({
                "gallery": g["file"], "frame_id": int(g["frame_id"]), "file": png.name, "backbone": backbone,
                "class": int(cls[j]), "title": f"Grad-CAM, test frame {int(g['frame_id'])}",
                "caption": f"Where {backbone} looked for its score {classes[int(cls[j])]} "
                           "(red: most evidence for that score).",
            })
    write_json(out_index_json, entries)
    return Path(out_index_json)
