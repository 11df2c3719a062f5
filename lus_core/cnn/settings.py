"""What the config says about each backbone (weights, what trains, whether its frames are
embedded once): plain functions of the config, without torch, so that the Snakefile can build its
DAG without importing it (torch alone took 4 s of every Snakemake start on the 2-core machine)."""

from __future__ import annotations

from collections.abc import Mapping

from lus_core.io_utils import sha256_file

# Only backbones whose logits are a function of the pooled embedding (``logits = head(embedding)``)
# can train from cached embeddings (lus_core.cnn.embedding_cache)
CACHEABLE = ("resnet18", "vgg16", "efficientnet_lite0")


def per_backbone(value, backbone: str, default=None):
    """A config value that is either one value for all backbones or a mapping backbone -> value
    (with an optional `default` entry)."""
    if isinstance(value, Mapping):
        return value.get(backbone, value.get("default", default))
    return default if value is None else value


def effective_finetune(backbone: str, weights: str, finetune: str) -> str:
    """`head` only makes sense on top of pretrained features."""
    if backbone == "scratch" or str(weights) == "none":
        return "all"
    return finetune


def backbone_weights(config: Mapping, backbone: str) -> str:
    """`train.weights` of one backbone ("none", "imagenet" or a local path)."""
    return str(per_backbone(config["train"]["weights"], backbone, "none"))


def backbone_finetune(config: Mapping, backbone: str) -> str:
    """What trains for one backbone: "head" (a frozen pretrained encoder) or "all"."""
    requested = str(per_backbone(config["train"]["finetune"], backbone, "head"))
    return effective_finetune(backbone, backbone_weights(config, backbone), requested)


def embedding_is_learned(config: Mapping, backbone: str) -> bool:
    """Whether `backbone`'s embedding trains on the labels (False for a frozen pretrained encoder)."""
    return backbone_finetune(config, backbone) != "head"


def cache_enabled(config: Mapping, backbone: str) -> bool:
    """True when `backbone` trains only its output layer on a frozen pretrained encoder."""
    if not config["train"]["embedding_cache"] or backbone not in CACHEABLE:
        return False
    return backbone_finetune(config, backbone) == "head"


def space_follows_model(config: Mapping, backbone: str, space: str) -> bool:
    """Whether a similarity space changes with the trained model: the softmax, and the embedding
    (and its t-SNE) when the encoder learns; raw pixels and a frozen encoder's features do not,
    so a seed replica (train.seeds) searches the first seed's neighbour lists there."""
    return space == "softmax" or (space in ("embedding", "tsne") and embedding_is_learned(config, backbone))


def encoder_settings(config: Mapping, backbone: str) -> dict:
    """Everything that determines the cached features (a cache made with others is refused)."""
    tc = config["train"]
    weights = backbone_weights(config, backbone)
    n_views = int(tc["cache_views"])
    return {
        "backbone": backbone,
        "weights": weights,
        "weights_sha256": sha256_file(weights) if weights not in ("none", "imagenet") else None,
        "image_size": int(tc["image_size"]),
        "n_views": n_views,
        "augment": dict(tc["augment"]) if n_views else None,
        "seed": int(config["seed"]),
        "input": "grey",  # every frame's grey image (lus_core.frames.decode.grey), colour videos too
    }
