import torch

from lus_core.cnn.embedding_cache import cache_paths_by_video
from lus_core.cnn.train import run_train
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    run_train(
        sm.input.index,
        sm.input.split,
        sm.wildcards.backbone,
        sm.wildcards.fold,
        sm.output.model,
        sm.output.metrics,
        sm.output.curve,
        sm.params.checkpoint_dir,
        config_of(sm),
        cache_paths=cache_paths_by_video(sm.input.embeddings),
        scope=sm.params.scope,
    )
