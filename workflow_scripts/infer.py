import torch

from lus_core.cnn.embedding_cache import cache_paths_by_video
from lus_core.cnn.infer import run_infer
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    models = {fold: sm.input[fold] for fold in sm.params.folds}
    run_infer(
        sm.input.index, sm.input.split, sm.wildcards.backbone, models, sm.output[0], config_of(sm),
        cache_paths=cache_paths_by_video(sm.input.embeddings),
        scope=sm.params.scope,
    )
