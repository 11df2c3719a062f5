"""What the config says about each backbone (weights, what trains, whether its frames are
embedded once): plain functions of the config, without torch, so that the Snakefile can build its
DAG without importing it (torch alone took 4 s of every Snakemake start on the 2-core machine)."""

from __future__ import annotations

from collections.abc import Mapping

from lus_core.io_utils import sha256_file

# Only backbones whose logits are a function of the pooled embedding (``logits = head(embedding)``)
# can train from cached embeddings (lus_core.cnn.embedding_cache)
CACHEABLE = ("resnet18", "vgg16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# Backbones made of a sequence of blocks whose last ones can train on the cached activations of
# the frozen ones before them (`train.finetune: {last_blocks: N}`, lus_core.cnn.backbones.blocks)
PARTIAL = {"resnet18": 8, "efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}  # backbone -> its number of blocks
LAST_BLOCKS = "last_blocks:"


def per_backbone(value, backbone: str, default=None):
    """A config value that is either one value for all backbones or a mapping backbone -> value
    (with an optional `default` entry)."""
    if isinstance(value, Mapping):
        return value.get(backbone, value.get("default", default))
    return default if value is None else value


def finetune_name(value) -> str:
    """One backbone's `train.finetune` as the name models and caches record: "head", "all" or
    "last_blocks:N" (the config's `{last_blocks: N}`)."""
    if isinstance(value, Mapping):
        return f"{LAST_BLOCKS}{int(value['last_blocks'])}"
    return str(value)


def trained_blocks(finetune: str) -> int:
    """N of a "last_blocks:N" fine-tuning, 0 for "head" and "all"."""
    return int(finetune[len(LAST_BLOCKS):]) if finetune.startswith(LAST_BLOCKS) else 0


def finetune_problems(config: Mapping) -> list[str]:
    """Why the config's `train.finetune` cannot apply to a backbone (empty when it can)."""
    problems = []
    for backbone in config["train"]["backbones"]:
        blocks = trained_blocks(backbone_finetune(config, backbone))
        if not blocks:
            continue
        if backbone not in PARTIAL:
            problems.append(f"{backbone} has no blocks to fine-tune (last_blocks works for "
                            f"{', '.join(PARTIAL)}); use head or all for it")
        elif blocks > PARTIAL[backbone]:
            problems.append(f"{backbone} has {PARTIAL[backbone]} blocks, last_blocks asks for {blocks}")
    return problems


def effective_finetune(backbone: str, weights: str, finetune: str) -> str:
    """`head` and the last blocks only make sense on top of pretrained features."""
    if backbone == "scratch" or str(weights) == "none":
        return "all"
    return finetune


def backbone_weights(config: Mapping, backbone: str) -> str:
    """`train.weights` of one backbone ("none", "imagenet" or a local path)."""
    return str(per_backbone(config["train"]["weights"], backbone, "none"))


def backbone_finetune(config: Mapping, backbone: str) -> str:
    """What trains for one backbone: "head" (a frozen pretrained encoder) or "all"."""
    value = config["train"]["finetune"]
    if not (isinstance(value, Mapping) and "last_blocks" in value):  # else one spec for every backbone
        value = per_backbone(value, backbone, "head")
    requested = finetune_name(value)
    return effective_finetune(backbone, backbone_weights(config, backbone), requested)


def embedding_is_learned(config: Mapping, backbone: str) -> bool:
    """Whether `backbone`'s embedding trains on the labels (False for a frozen pretrained encoder)."""
    return backbone_finetune(config, backbone) != "head"


def ensemble_of(config: Mapping) -> bool:
    """Whether frames no model trained on (test patients', lus predict's) are scored by the `all`
    and fold models together (train.ensemble: folds)."""
    return config["train"]["ensemble"] == "folds"


def cache_enabled(config: Mapping, backbone: str) -> bool:
    """True when `backbone` trains from the cache of the `embed` step: only its output layer on a
    frozen pretrained encoder's embeddings, or its last blocks on the activations before them."""
    if not config["train"]["embedding_cache"]:
        return False
    finetune = backbone_finetune(config, backbone)
    if trained_blocks(finetune):
        return backbone in PARTIAL
    return finetune == "head" and backbone in CACHEABLE


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
        # activations before the last N blocks instead of the embedding (absent: the embedding,
        # so that caches made before partial fine-tuning existed stay valid)
        **({"before_last_blocks": blocks} if (blocks := trained_blocks(backbone_finetune(config, backbone))) else {}),
    }
