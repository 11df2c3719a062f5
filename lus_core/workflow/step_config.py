"""The config keys each step reads: a step gets exactly these (its rule's ``params.config``),
so a changed key reruns exactly the steps that read it, and their dependents.

Snakemake reruns a job when its ``params`` change. Every rule passes its step's slice of the
validated config (:func:`step_params`, canonical JSON) and its script hands that slice, not
``snakemake.config``, to ``lus_core``: a step cannot read a key it did not declare (it does not
have it, and reading it raises ``KeyError``), and a key it declares is in its params.
``tests/test_step_config.py`` changes every key of the schema in turn on a finished run and
checks with a dry run that exactly the declaring steps and their dependents would rerun.

Keys in :data:`RUN_WIDE` shape the run itself (its folder, which videos, which jobs exist) and are
read when the DAG is built; the test leaves them out, each with the reason.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

from lus_core.split.scopes import seed_overrides

# what a configuration's validation and test scores depend on: `evaluate` and a seed replica's
# `validate` (train.weights / finetune: whether an embedding is learned decides which
# configurations have an out-of-fold validation score, lus_core.evaluation.selection)
EVALUATION_KEYS = ("seed", "classes", "class_order", "evaluate", "similarity.k", "similarity.fallback",
                   "similarity.fallback_diversity", "similarity.diversity", "similarity.raw_size",
                   "train.weights", "train.finetune")

# "a.b" declares that key and everything below it; "*" is the whole config
STEP_KEYS: dict[str, tuple[str, ...]] = {
    "synth": ("seed", "classes", "dataset.synthetic.n_patients", "dataset.synthetic.videos_per_patient",
              "dataset.synthetic.frames_per_video", "dataset.synthetic.size", "dataset.synthetic.fps",
              "dataset.synthetic.colour_videos"),
    # the synthetic labels table is read inside the job (label_columns); real videos' labels come
    # resolved in the job's `entries`
    "extract_frames": ("classes", "dataset.label_columns", "dataset.findings", "dataset.on_bad_video",
                       "dataset.min_decoded_fraction", "frames.size", "frames.stride",
                       "frames.max_frames_per_video", "frames.crop", "frames.drop_blank", "frames.blank_std"),
    "verify_frame_stores": (),
    "frame_index": ("classes",),
    "balance_split": ("seed", "classes", "split"),
    # what determines a frozen encoder's features (lus_core.cnn.settings.encoder_settings)
    "embed": ("seed", "train.weights", "train.finetune", "train.image_size", "train.embedding_cache",
              "train.cache_views", "train.augment"),
    "train": ("seed", "classes", "dataset.findings", "train.weights", "train.finetune", "train.image_size",
              "train.epochs", "train.batch_size", "train.lr", "train.weight_decay", "train.patience",
              "train.class_balance", "train.loss", "train.embedding_cache", "train.cache_views",
              "train.findings_weight", "train.sord_alpha", "train.num_workers", "train.augment"),
    "infer": ("seed", "classes", "dataset.findings", "train.weights", "train.finetune", "train.image_size",
              "train.ensemble", "train.batch_size", "train.num_workers", "train.embedding_cache", "train.cache_views",
              "train.augment"),
    "fit_confidence": ("seed", "classes", "confidence.threshold_rule", "confidence.target_coverage",
                       "confidence.conformal_alpha", "confidence.svc_balance", "confidence.conformal_score",
                       "confidence.params"),
    # the reliability figure's temperature is the temperature method's, fitted again here
    "confidence_report": ("seed", "confidence.params"),
    "build_index": ("seed", "similarity.metric", "similarity.n_trees", "similarity.search_k",
                    "similarity.raw_size", "similarity.per_patient_per_class", "similarity.tsne_perplexity"),
    "query_neighbors": ("seed", "classes", "similarity.k", "similarity.fallback", "similarity.recall_queries",
                        "similarity.diversity", "similarity.fallback_diversity"),
    "fit_video_model": ("seed", "classes", "video_model.input", "video_model.use_findings", "video_model.hidden",
                        "video_model.dropout", "video_model.early_stopping", "video_model.motion",
                        "video_model.epochs", "video_model.lr", "video_model.weight_decay", "video_model.loss",
                        "video_model.sord_alpha", "video_model.confident_fraction"),
    "evaluate": EVALUATION_KEYS,
    # a seed replica's validation scores, which its scope's replicas choose on (train.seeds)
    "validate": EVALUATION_KEYS,
    # the pooled estimate's intervals and figures; what was chosen is read from the folds' summaries
    "nested_estimate": ("seed", "classes", "class_order", "evaluate.n_bootstrap", "evaluate.ci"),
    "gradcam": (),
    # the report shows the whole config; the manifest records it for `lus predict` and `lus summarize`
    "report": ("*",),
    "manifest": ("*",),
}

# Keys read when the DAG is built: they decide the results folder, which videos there are and
# which jobs exist, so a change adds or removes jobs rather than rerunning declared steps.
RUN_WIDE: dict[str, str] = {
    "results": "the results folder itself: another value is another run",
    "data_root": "resolves dataset.video_dirs and dataset.labels into paths (the extraction's inputs)",
    "dataset.synthetic.enabled": "which data exist: the synthetic cohort or the user's videos",
    "dataset.video_dirs": "which videos exist (each one's extraction input)",
    "dataset.labels": "the labels table, resolved per video into the extraction jobs' entries",
    "dataset.patient_from": "each video's patient, resolved into the extraction jobs' entries",
    "dataset.patient_regex": "each video's patient, resolved into the extraction jobs' entries",
    "dataset.raw_patient_ids": "each video's patient (raw or pseudonymised), resolved into the extraction jobs' entries",
    "dataset.patient_salt_file": "the salt of the pseudonyms, resolved into the extraction jobs' entries (ids, patients)",
    "dataset.unmatched_labels": "checked when the video table is built; no step reads it",
    "frames.extract_jobs": "how the videos are shared among extraction jobs (scheduling, not content)",
    "train.embedding_jobs": "how the videos are shared among embedding jobs (scheduling, not content)",
    "train.backbones": "which backbones' jobs exist",
    "confidence.methods": "which confidence jobs exist",
    "similarity.spaces": "which index and neighbour jobs exist",
    "video_model.enabled": "whether the video-model jobs exist",
    "split.outer_folds": "how many scopes (outer folds) there are, each with its own jobs",
    "train.seeds": "how many replicas of each scope there are (one per model seed), each with its own jobs; "
                   "a replica's seed reaches its steps' slices (lus_core.split.scopes.seed_overrides)",
}


# rules that run a step under another name: the t-SNE index (`use rule build_index as build_tsne_index`)
# and every fold's output layer on cached embeddings in one job (`train_heads`)
RULE_STEP = {"build_tsne_index": "build_index", "train_heads": "train"}


def step_of_rule(rule: str) -> str:
    """The step a rule runs (extract_frames_3 -> extract_frames, build_tsne_index -> build_index,
    train_outer2 -> train: an outer fold's copy of a rule, train_seed1 and train_outer2_seed1 ->
    train: a seed replica's, lus_core.split.scopes)."""
    for copy_of in ("_seed", "_outer"):  # a replica's copy of an outer fold's copy (train_outer2_seed1)
        base, sep, number = rule.rpartition(copy_of)
        if sep and number.isdigit():
            rule = base
    for family in ("extract_frames", "embed"):
        if rule.startswith(family + "_") and rule[len(family) + 1:].isdigit():
            return family
    return RULE_STEP.get(rule, rule)


def declared_keys(step: str) -> tuple[str, ...]:
    if step not in STEP_KEYS:
        raise KeyError(f"no config declaration for step {step!r} (lus_core.workflow.step_config.STEP_KEYS)")
    return STEP_KEYS[step]


def _covers(declared: str, key: str) -> bool:
    return declared == "*" or key == declared or key.startswith(declared + ".")


def reads(step: str, key: str, config: Mapping) -> bool:
    """Whether ``step`` receives config key ``key`` ("a.b") under ``config``."""
    if key == "train.augment" or key.startswith("train.augment."):
        if step in ("embed", "infer") and not config["train"]["cache_views"]:
            return False  # augmentation reaches a frozen encoder's features only through cached views
    return any(_covers(d, key) for d in declared_keys(step))


def step_config(config: Mapping, step: str) -> dict:
    """The slice of the validated ``config`` that ``step`` reads, nested as in the config."""
    keys = declared_keys(step)
    if "*" in keys:
        return copy.deepcopy(dict(config))
    out: dict = {}
    for key in keys:
        if not reads(step, key, config):
            continue
        src, dst = config, out
        *parents, leaf = key.split(".")
        for part in parents:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[leaf] = copy.deepcopy(src[leaf])
    return out


def step_params(config: Mapping, step: str, seed: int | None = None) -> str:
    """``step_config`` as canonical JSON: the rule's ``params.config`` (a changed value reruns the
    step); ``seed``: the model seed of the scope replica the rule runs in (lus_core.split.scopes)."""
    sliced = step_config(config, step)
    if seed is not None:
        sliced.update(seed_overrides(config, step, seed))
    return json.dumps(sliced, sort_keys=True)
