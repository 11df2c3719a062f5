"""Ordered classes (LUS severity scores) or unordered ones (diagnoses): the config's `class_order`.

What only an order gives meaning to is refused for nominal classes, with a message naming the
key: SORD soft ordinal targets (`train.loss`, `video_model.loss`), the mean of neighbours' class
indices (`similarity.fallback: mean`) and QWK as the selection criterion. The criterion `auto`
is QWK for ordinal classes and balanced accuracy for nominal ones; the video scores that average
or take the highest class index (max, mean, confident mean) are left out for nominal classes,
whose video answer is chosen among the majority of frames and the learned attention score by
validation balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

ORDERS = ("ordinal", "nominal")
# video scores that need an order of the classes (lus_core.videolevel.table)
ORDINAL_VIDEO_SCORES = ("max", "mean", "confident_mean")


def class_order(config: Mapping) -> str:
    order = config["class_order"]
    if order not in ORDERS:
        raise ValueError(f"class_order must be one of {ORDERS}, got {order!r}")
    return order


def selection_criterion(criterion: str, order: str) -> str:
    """`evaluate.selection.criterion` resolved: `auto` is QWK for ordinal classes, balanced accuracy for nominal ones."""
    if criterion == "auto":
        return "qwk" if order == "ordinal" else "balanced_accuracy"
    return criterion


def video_metric(order: str) -> str:
    """The validation metric that chooses a video score."""
    return "qwk" if order == "ordinal" else "balanced_accuracy"


def video_scores(all_scores: tuple[str, ...], order: str) -> tuple[str, ...]:
    return all_scores if order == "ordinal" else tuple(s for s in all_scores if s not in ORDINAL_VIDEO_SCORES)


def nominal_conflicts(config: Mapping) -> list[tuple[str, str]]:
    """(key, why) for every setting of a nominal config that needs ordered classes."""
    if class_order(config) == "ordinal":
        return []
    why = "needs ordered classes, and class_order is nominal"
    out = []
    if config["train"]["loss"] == "sord":
        out.append(("train.loss", f"sord (soft ordinal targets) {why}: use ce"))
    if config["video_model"]["loss"] == "sord":
        out.append(("video_model.loss", f"sord (soft ordinal targets) {why}: use ce"))
    if "mean" in config["similarity"]["fallback"]:
        out.append(("similarity.fallback", f"mean (the mean of the neighbours' class indices) {why}: use vote "
                                           "and/or weighted"))
    if config["evaluate"]["selection"]["criterion"] == "qwk":
        out.append(("evaluate.selection.criterion", f"qwk (quadratic weights on class distances) {why}: use auto "
                                                    "(balanced_accuracy), accuracy or macro_f1"))
    return out
