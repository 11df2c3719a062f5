import torch

from lus_core.cnn.embedding_cache import cache_paths_by_video
from lus_core.cnn.train import run_train
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    caches = cache_paths_by_video(sm.input.embeddings)
    # every fold's output layer, each as its own `train` job would (rules/common.smk: fold_model_outputs)
    for fold in sm.params.folds:
        run_train(
            sm.input.index,
            sm.input.split,
            sm.wildcards.backbone,
            fold,
            sm.output[f"model_{fold}"],
            sm.output[f"metrics_{fold}"],
            sm.output[f"curve_{fold}"],
            sm.params.checkpoint_dirs[fold],
            config_of(sm),
            cache_paths=caches,
            scope=sm.params.scope,
        )
