"""Score lung-ultrasound frames with an exported LUS scorer (`lus export`): needs only numpy and
onnxruntime, not the workflow.

    python predict_onnx.py FRAMES.npy [--export DIR] [--json OUT.json]

FRAMES.npy holds uint8 frames as the workflow stores them (lus predict and the frame stores:
the sector crop, resized into a square of export.json's frame size): (N, H, W), (N, H, W, 1)
grey or (N, H, W, 3) RGB. They are turned grey and resized to the model's input exactly as
export.json's `input.preprocessing` says, scored, and printed: per frame the class
probabilities, the class, the confidence and whether it is trusted (when the export's confidence
method is in the graph); per video every aggregation of export.json's `video_aggregation`.
Frames that are not trusted would go to the run's similarity fallback, which is not part of the
export (`lus predict` does it): they are counted, and their CNN class stays in the aggregations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def grey(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, H, W): OpenCV's integer luminance of RGB frames (its RGB2GRAY:
    15-bit fixed point, rounded), grey frames as they are."""
    if frames.ndim == 3:
        return frames
    if frames.shape[-1] == 1:
        return frames[..., 0]
    rgb = frames.astype(np.uint32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + 16384) >> 15).astype(np.uint8)


def resize_taps(n_in: int, n_out: int) -> list[tuple[int, np.ndarray]]:
    """Per output pixel (first input pixel, float32 weights): bilinear resampling with
    antialiasing (the triangle filter widened by the scale when shrinking), computed as
    torch.nn.functional.interpolate(antialias=True, align_corners=False) computes it."""
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    support = scale if scale >= 1 else f32(1)
    inverse = f32(1) / scale if scale >= 1 else f32(1)
    taps = []
    for i in range(n_out):
        centre = scale * f32(i + 0.5)
        lo, hi = max(int(centre - support + f32(0.5)), 0), min(int(centre + support + f32(0.5)), n_in)
        w = np.maximum(f32(0), f32(1) - np.abs((np.arange(lo, hi, dtype=f32) - centre + f32(0.5)) * inverse))
        taps.append((lo, (w / w.sum(dtype=f32)).astype(f32)))
    return taps


def resize_axis(x: np.ndarray, taps, axis: int) -> np.ndarray:
    """float32 resampling of one axis, each output the weighted sum of its taps in order."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty((*x.shape[:-1], len(taps)), np.float32)
    for i, (lo, w) in enumerate(taps):
        acc = x[..., lo] * w[0]
        for j in range(1, len(w)):
            acc = acc + x[..., lo + j] * w[j]
        out[..., i] = acc
    return np.moveaxis(out, -1, axis)


def model_input(frames: np.ndarray, size: int) -> np.ndarray:
    """Stored frames -> the graph's input: uint8 (N, 1, size, size). The resize runs along the
    width, then the height, in float32 as torch does; its vectorised kernel sums in its own order,
    so a pixel in a thousand or so may come out one grey level apart."""
    g = grey(np.asarray(frames, np.uint8))
    if g.shape[1:] != (size, size):
        x = resize_axis(g.astype(np.float32), resize_taps(g.shape[2], size), 2)
        x = resize_axis(x, resize_taps(g.shape[1], size), 1)
        g = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return g[:, None]


def aggregate(classes: np.ndarray, max_softmax: np.ndarray, fraction: float) -> dict:
    """The video's score every way export.json lists (class indices)."""
    keep = max(1, math.ceil(fraction * len(classes)))
    confident = classes[np.argsort(-max_softmax, kind="stable")[:keep]]
    return {"max": int(classes.max()), "mean": int(np.floor(classes.mean() + 0.5)),
            "majority": int(np.bincount(classes).argmax()),
            "confident_mean": int(np.floor(confident.mean() + 0.5))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", type=Path, help=".npy file of uint8 frames")
    parser.add_argument("--export", type=Path, default=Path(__file__).resolve().parent,
                        help="the export folder (default: this script's)")
    parser.add_argument("--json", type=Path, help="also write the scores as JSON here")
    args = parser.parse_args(argv)
    contract = json.loads((args.export / "export.json").read_text())
    size = contract["input"]["shape"][2]
    session = ort.InferenceSession(str(args.export / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"frames": model_input(np.load(args.frames), size)}), strict=True))
    labels = contract["classes"]
    classes = out["softmax"].argmax(axis=1)
    trusted = out["trusted"] if "trusted" in out else np.ones(len(classes), bool)
    fraction = contract["video_aggregation"]["confident_fraction"]
    methods = contract["video_aggregation"]["methods"]  # unordered classes: the majority only
    video = {k: labels[v] for k, v in aggregate(classes, out["softmax"].max(axis=1), fraction).items() if k in methods}
    frames = [{"frame": i, "p": [round(float(p), 6) for p in out["softmax"][i]], "score": labels[int(classes[i])],
               **({"confidence": round(float(out["confidence"][i]), 6)} if "confidence" in out else {}),
               "trusted": bool(trusted[i])} for i in range(len(classes))]
    for f in frames:
        print(f"frame {f['frame']}: score {f['score']} p {f['p']}" + (f" confidence {f['confidence']:.3f}"
              if "confidence" in f else "") + ("" if f["trusted"] else " (not trusted: the run's fallback decides)"))
    chosen = contract["video_aggregation"]["chosen_on_training_patients"]
    print(f"video: {video}" + (f" (the run chose {chosen} on its training patients)" if chosen else ""))
    print(f"{int((~trusted).sum())} of {len(classes)} frames not trusted")
    if args.json:
        args.json.write_text(json.dumps({"frames": frames, "video": video, "untrusted": int((~trusted).sum())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
