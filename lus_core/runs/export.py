"""`lus export --run R --out DIR`: a finished run's deployed scorer as ONNX, runnable anywhere
onnxruntime runs (a scanner-side or web application), with what it needs to be used right.

The export folder holds:

- ``model.onnx`` (opset 17): the chosen configuration's CNN, its `all` model (encoder and output
  layers) and, for a run with `train.ensemble: folds`, its fold models beside it (the softmax and
  finding probabilities are the members' means, the logits the log of that mean, the embedding the
  `all` model's: as the workflow and `lus predict` score new patients), with the input
  normalisation inside the graph and, where the configuration's confidence
  method is a formula of the softmax (msp, temperature, entropy), its confidence and trust decision.
  Input ``frames``: uint8 (N, 1, S, S), S = train.image_size: the CNN's input, each stored frame's
  grey image resized (see ``export.json`` ``input.preprocessing``). Outputs: ``logits`` (N, C),
  ``softmax`` (N, C), ``embedding`` (N, D), then ``findings`` (N, F) with finding heads, then
  ``confidence`` (N,) and ``trusted`` (N,) with an expressible confidence method.
- ``export.json``: the contract (input, outputs, classes, preprocessing, the confidence rule with
  its threshold, what is not in the graph and why, the video aggregations, the parity measured at
  export on the run's own frames, checksums, code version and config hash).
- ``predict_onnx.py``: an example that needs only onnxruntime and numpy.
- ``model_card.md``: the run's model card (lus_core.runs.model_card).

The graph is checked when it is written: the run's stored frames go through torch
(`predict_frames_with`, as `lus predict` scores) and through onnxruntime, and the export stops
when a softmax differs by more than PARITY_TOLERANCE or a frame's class differs.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lus_core
from lus_core.class_order import video_metric, video_scores
from lus_core.cnn.frame_dataset import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor
from lus_core.cnn.infer import predict_frames_with
from lus_core.cnn.model_file import load_model
from lus_core.confidence.base import TRUST_NOTHING
from lus_core.evaluation.answer_level import METRIC_NAMES
from lus_core.frames.store import FrameReader, read_frame_index
from lus_core.io_utils import atomic_path, config_json, read_json, sha256_file, write_json
from lus_core.runs.reader import FinishedRun
from lus_core.runs.safe_output import check_output_dir, publish, staged

OPSET = 17
ENSEMBLE_RULE = ("softmax and finding probabilities: the mean over the members (the all model and the fold "
                 "models); logits: the log of that mean; embedding: the all model's")
PARITY_TOLERANCE = 1e-4  # max |softmax_torch - softmax_onnx| accepted at export
PARITY_FRAMES = 64  # stored frames of the run checked at export
EXPORT_FORMAT = 1
EXPORT_MANIFEST = ".lus_export.json"  # the files an export wrote (lus_core.runs.safe_output)
# confidence methods that are a formula of the logits / softmax: in the graph
FORMULAS = {
    "msp": "max_c softmax_c",
    "temperature": "max_c softmax(logits / T)_c",
    "entropy": "1 - H(softmax) / log C, H(p) = -sum_c p_c log p_c (0 log 0 = 0), clipped to [0, 1]",
}
NOT_EXPRESSIBLE = {
    "conformal": "its randomised score hashes each frame's softmax bytes (a keyed BLAKE2b): no ONNX operator",
    "trust_score": "needs the run's training embeddings (nearest neighbours per class)",
    "mlp": "a scikit-learn model on the softmax (use lus predict)",
    "svc": "a scikit-learn model on the softmax (use lus predict)",
    "svc_per_class": "scikit-learn models on the softmax (use lus predict)",
}
AGGREGATIONS = {
    "max": "the highest frame class index",
    "mean": "floor(mean of the frame class indices + 0.5)",
    "majority": "the most frequent frame class index (the lowest on ties)",
    "confident_mean": "floor(mean class index of the ceil(fraction x N) frames with the highest max softmax "
                      "(a stable sort: the earlier frame first on ties) + 0.5)",
}


def pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): adaptive average pooling of one axis as a matrix (each output the mean of
    input cells floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1, as torch pools)."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class MatrixAdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d that the ONNX exporter takes at any size: where the output size does
    not divide the input size (vgg16's 7 x 7 pool after a small input), the pooling is two matrix
    products, fixed by the one input size the graph is made for."""

    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, tuple | list) else (output_size, output_size)
        self.output_size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = (o if o is not None else n for o, n in zip(self.output_size, (h, w), strict=True))
        if h % oh == 0 and w % ow == 0:
            return nn.functional.adaptive_avg_pool2d(x, (oh, ow))
        return pool_matrix(h, oh).to(x) @ x @ pool_matrix(w, ow).to(x).T


def exportable(model: nn.Module) -> nn.Module:
    """A copy of `model` whose adaptive average pools export at any input size (same results)."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], MatrixAdaptiveAvgPool2d(module.output_size))
    return model


class DeployedScorer(nn.Module):
    """The graph: uint8 grey (N, 1, S, S) -> logits, softmax, embedding[, findings][, confidence, trusted].

    Normalisation as `lus_core.cnn.frame_dataset.prepare_batch`: x / 255 in three channels, minus
    the ImageNet mean, over its std."""

    def __init__(self, model, confidence: dict | None = None, fold_models=()):
        super().__init__()
        self.model = exportable(model).eval()
        self.fold_models = nn.ModuleList([exportable(m).eval() for m in fold_models])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1))
        self.method = confidence["method"] if confidence else None
        if confidence:
            self.register_buffer("threshold", torch.tensor(float32_threshold(confidence["threshold"])))
            self.register_buffer("temperature", torch.tensor(float(confidence.get("temperature") or 1.0)))

    def output_names(self) -> list[str]:
        names = ["logits", "softmax", "embedding"]
        names += ["findings"] if self.model.findings_head is not None else []
        return names + (["confidence", "trusted"] if self.method else [])

    def forward(self, frames: torch.Tensor):
        x = frames.to(torch.float32).div(255.0).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        logits, emb = self.model.embed(x)
        softmax = torch.softmax(logits, dim=1)
        findings = torch.sigmoid(self.model.findings_head(emb)) if self.model.findings_head is not None else None
        if len(self.fold_models):  # the ensemble, as lus_core.cnn.infer.ensemble_scores
            members = [m.embed(x) for m in self.fold_models]
            softmax = torch.stack([softmax, *(torch.softmax(lo, dim=1) for lo, _ in members)]).mean(dim=0)
            logits = torch.log(softmax.clamp_min(1e-12))
            if findings is not None:
                findings = torch.stack([findings, *(torch.sigmoid(m.findings_head(em))
                                                    for m, (_, em) in zip(self.fold_models, members, strict=True))]).mean(dim=0)
        out = [logits, softmax, emb]
        if findings is not None:
            out.append(findings)
        if self.method:
            conf = confidence_formula(self.method, logits, softmax, self.temperature)
            out += [conf, conf >= self.threshold]
        return tuple(out)


def confidence_formula(method: str, logits: torch.Tensor, softmax: torch.Tensor, temperature) -> torch.Tensor:
    """The confidence of msp / temperature / entropy (lus_core.confidence.baselines), in torch ops."""
    if method == "msp":
        return softmax.max(dim=1).values
    if method == "temperature":
        return torch.softmax(logits / temperature, dim=1).max(dim=1).values
    if method == "entropy":
        p = softmax / softmax.sum(dim=1, keepdim=True)
        h = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)
        return (1.0 - h / math.log(p.shape[1])).clamp(0.0, 1.0)
    raise ValueError(f"confidence method {method!r} is not a formula of the softmax")


def float32_threshold(threshold: float) -> float:
    """The smallest float32 at or above the run's float64 threshold (so conf >= t keeps its meaning);
    above 1 (trust nothing) stays above every float32 confidence."""
    if threshold >= TRUST_NOTHING:
        return 2.0
    t32 = np.float32(threshold)
    return float(np.nextafter(t32, np.float32(np.inf)) if float(t32) < threshold else t32)


def export_onnx(scorer: DeployedScorer, image_size: int, path: str | Path) -> None:
    """Write the scorer as ONNX (opset 17, the TorchScript exporter: every backbone's ops, the
    efficientnet 'same' padding included, are fixed by the one input size), batch size free."""
    names = scorer.output_names()
    dummy = torch.zeros(2, 1, image_size, image_size, dtype=torch.uint8)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(scorer, (dummy,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["frames"],
                          output_names=names, dynamic_axes={n: {0: "n"} for n in ["frames", *names]})


def check_graph(path: str | Path) -> None:
    """The ONNX checker's verdict on the written graph (operators, types, shapes)."""
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def onnx_session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cnn_input(frames: np.ndarray, image_size: int) -> np.ndarray:
    """Stored uint8 frames (N, H, W, C) -> the graph's input (N, 1, S, S): the workflow's own
    preprocessing (lus_core.cnn.frame_dataset.frames_to_tensor), one channel of three equal ones."""
    return frames_to_tensor(frames, image_size)[:, :1].numpy()


def parity(model, scorer_path: str | Path, frames: np.ndarray, image_size: int, fold_models=()) -> dict:
    """The same stored frames through torch (`predict_frames_with`, as `lus predict` scores, with the
    ensemble's fold models if any) and through the ONNX graph: max |softmax difference| and whether
    every frame's class agrees."""
    _, softmax_torch, emb_torch, _ = predict_frames_with(model, list(fold_models), frames, image_size)
    outputs = onnx_session(scorer_path).run(None, {"frames": cnn_input(frames, image_size)})
    softmax_onnx, emb_onnx = outputs[1], outputs[2]
    return {"n_frames": int(len(frames)),
            "max_abs_softmax_difference": float(np.abs(softmax_torch - softmax_onnx).max()) if len(frames) else 0.0,
            "max_abs_embedding_difference": float(np.abs(emb_torch - emb_onnx).max()) if len(frames) else 0.0,
            "same_class": bool(np.array_equal(softmax_torch.argmax(1), softmax_onnx.argmax(1))),
            "tolerance": PARITY_TOLERANCE}


def confidence_rule(run: FinishedRun, choice: dict) -> tuple[dict | None, dict]:
    """(the rule put in the graph or None, its description for export.json)."""
    if choice["row_type"] != "combined":
        why = {"cnn": "the configuration trusts every frame (CNN alone)",
               "fallback_only": "the configuration scores every frame by its nearest training frames"}
        return None, {"method": None, "in_graph": False, "why": why.get(choice["row_type"], choice["row_type"])}
    method = choice["confidence"]
    record = read_json(run.verified(run.layout.confidence_summary(choice["backbone"], method)))
    described = {"method": method, "threshold": record["threshold"], "threshold_rule": record["threshold_rule"],
                 "rule": "trusted = confidence >= threshold"}
    if method not in FORMULAS:
        return None, {**described, "in_graph": False, "why": NOT_EXPRESSIBLE.get(method, "not a formula")}
    rule = {"method": method, "threshold": float(record["threshold"]),
            "temperature": (record.get("fitted") or {}).get("temperature")}
    described |= {"in_graph": True, "formula": FORMULAS[method],
                  "threshold_float32": float32_threshold(rule["threshold"])}
    if method == "temperature":
        described["temperature"] = rule["temperature"]
    return rule, described


def _fallback(choice: dict) -> dict | None:
    if choice["row_type"] == "cnn":
        return None
    frames = "untrusted frames" if choice["row_type"] == "combined" else "every frame"
    return {"in_graph": False, "applies_to": frames,
            "rule": f"{choice['fallback']} of the k={choice['k']} nearest training frames (of other patients) in the "
                    f"{choice['space']} space, neighbour list {choice['diversity'] or 'none'}",
            "why": "needs the run's training frames and similarity index: use `lus predict --run` for these frames; "
                   "this export gives the CNN's scores and marks the frames that would go to the fallback"}


def _video_aggregation(run: FinishedRun, backbone: str) -> dict:
    fraction = float(run.config["video_model"]["confident_fraction"])
    order = run.summary.get("class_order", "ordinal")  # nominal classes: no max / mean of class indices
    metric, allowed = video_metric(order), video_scores(tuple(AGGREGATIONS), order)
    rows = {r["video_score"]: r for r in (run.summary.get("video_level") or {}).get(backbone, [])}
    fixed = {k: v for k, v in rows.items() if k in allowed and v.get(f"val_{metric}") is not None}
    best = max(fixed, key=lambda k: (fixed[k][f"val_{metric}"], -allowed.index(k))) if fixed else None
    return {"frame_scores": "each frame's class index (argmax of softmax)",
            "methods": {k: v if k != "confident_mean" else f"{v}; fraction {fraction}" for k, v in AGGREGATIONS.items()
                        if k in allowed},
            "confident_fraction": fraction,
            "chosen_on_training_patients": best,
            "chosen_by": f"the best out-of-fold video {METRIC_NAMES[metric]} of the training patients "
                         "(eval/summary.json video_level)",
            "validation_qwk": {k: v.get("val_qwk") for k, v in rows.items()},
            "not_exported": {"attention": "the run's learned attention model is a separate network (video/*.pt): "
                                          "use lus predict"}}


def _run_frames(run: FinishedRun, n: int) -> np.ndarray:
    """Up to n stored frames of the run, spread over its frame index (checked against the manifest)."""
    index = read_frame_index(run.verified(run.layout.frame_index()))
    stores = run.verified_stores(index["h5"].unique())
    index["h5"] = index["h5"].astype(str).map(stores)
    rows = np.unique(np.linspace(0, len(index) - 1, min(n, len(index))).round().astype(int))
    reader = FrameReader(index)
    try:
        frames = [reader.frame(int(i)) for i in rows]
    finally:
        reader.reset()
    # one batch needs one channel count: grey frames as three equal channels beside colour ones
    if len({f.shape[-1] for f in frames}) > 1:
        frames = [np.repeat(f, 3, axis=-1) if f.shape[-1] == 1 else f for f in frames]
    return np.stack(frames)


def config_hash(config: dict) -> str:
    """sha256 of the run's canonical config JSON (what every output of the run carries)."""
    return hashlib.sha256(config_json(config).encode()).hexdigest()


def run_export(run_dir, out_dir, config_name: str = "selected", overwrite: bool = False) -> Path:
    """Export the configuration `config_name` (default: the one chosen on the training patients)
    of a finished run into `out_dir` (new or empty; with `overwrite`, an earlier export's files
    only). Returns the folder."""
    from lus_core.runs.model_card import model_card_text

    run, out_dir = FinishedRun(run_dir), Path(out_dir)
    # its own manifest: `lus predict --overwrite` into an export (or the reverse) replaces nothing
    check_output_dir(out_dir, [run.root], overwrite, EXPORT_MANIFEST, "lus export")
    choice = run.configuration(config_name)
    backbone = choice["backbone"]
    # the `all` model, and with train.ensemble: folds the fold models beside it
    scoring = run.scoring_models(backbone)
    model_file, *fold_files = scoring.values()
    model, meta = load_model(model_file)
    fold_models = [load_model(f)[0] for f in fold_files]
    image_size = int(meta.get("image_size", run.config["train"]["image_size"]))
    rule, confidence = confidence_rule(run, choice)
    scorer = DeployedScorer(model, rule, fold_models)
    with staged(out_dir) as staging:  # removed however it ends, a SIGTERM included
        onnx_path = staging / "model.onnx"
        export_onnx(scorer, image_size, onnx_path)
        check_graph(onnx_path)
        check = parity(model, onnx_path, _run_frames(run, PARITY_FRAMES), image_size, fold_models)
        if check["max_abs_softmax_difference"] > PARITY_TOLERANCE or not check["same_class"]:
            raise ValueError(f"{onnx_path.name}: the ONNX graph does not reproduce the torch model on the run's frames "
                             f"({check}); not exported")
        classes = list(run.config["classes"])
        contract = {
            "format": EXPORT_FORMAT,
            "configuration": choice,
            # the frames' final scores are lus predict's exactly when no fallback is involved
            "deployed_equivalent": choice["row_type"] == "cnn",
            "classes": classes,
            "input": {"name": "frames", "dtype": "uint8", "shape": ["n", 1, image_size, image_size],
                      "preprocessing": preprocessing(int(run.config["frames"]["size"]), image_size)},
            "outputs": _outputs(scorer, model, len(classes)),
            "confidence": confidence,
            "fallback": _fallback(choice),
            "video_aggregation": _video_aggregation(run, backbone),
            "findings": list(model.finding_names),
            "parity": check,
            "model": {"backbone": backbone, "image_size": image_size, "n_classes": len(classes),
                      "embedding_dim": model.embedding_dim, "opset": OPSET, "onnx_sha256": sha256_file(onnx_path),
                      "source_model": run.layout.relative(run.layout.model(backbone, "all")),
                      "source_model_sha256": sha256_file(model_file),
                      "ensemble": {"members": list(scoring),
                                   "source_models_sha256": [sha256_file(f) for f in scoring.values()],
                                   "rule": ENSEMBLE_RULE} if fold_files else None},
            "code_version": lus_core.__version__, "config_sha256": config_hash(run.config),
        }
        write_json(staging / "export.json", contract)
        shutil.copyfile(Path(__file__).with_name("predict_onnx.py"), staging / "predict_onnx.py")
        card = run.root / "report" / "model_card.md"
        (staging / "model_card.md").write_text(card.read_text() if card.is_file() else model_card_text(run))
        publish(staging, out_dir, EXPORT_MANIFEST, "lus export")
    return out_dir


def preprocessing(frame_size: int, image_size: int) -> list[str]:
    steps = [f"a stored frame: the sector crop of a video frame, resized into a black {frame_size} x {frame_size} "
             "square (lus_core.frames.decode.crop_resize; lus predict does this from a video)",
             "its grey image: colour frames by OpenCV's integer luminance (R 9798 + G 19235 + B 3735 + 16384) >> 15, "
             "grey ones as they are"]
    if frame_size != image_size:
        steps.append(f"resized to {image_size} x {image_size}: bilinear with antialiasing (torch.nn.functional."
                     "interpolate, align_corners False, float32), rounded half to even, clipped to 0..255 "
                     "(predict_onnx.py's model_input)")
    steps.append("uint8, one channel: the graph divides by 255, repeats it in three channels and normalises with "
                 f"the ImageNet mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}")
    return steps


def _outputs(scorer: DeployedScorer, model, n_classes: int) -> dict:
    out = {"logits": f"float32 (n, {n_classes})", "softmax": f"float32 (n, {n_classes}): class probabilities",
           "embedding": f"float32 (n, {model.embedding_dim}): penultimate features"}
    if model.findings_head is not None:
        out["findings"] = f"float32 (n, {len(model.finding_names)}): probability of each finding {model.finding_names}"
    if scorer.method:
        out["confidence"] = "float32 (n,): the confidence method's value (higher: more likely right)"
        out["trusted"] = "bool (n,): confidence >= the run's threshold"
    return out
