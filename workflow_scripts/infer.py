import torch

from lus_core.embed_cache import cache_paths_by_video
from lus_core.inference import run_infer
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    models = {fold: sm.input[fold] for fold in sm.params.folds}
    run_infer(
        sm.input.index, sm.input.split, sm.wildcards.backbone, models, sm.output[0], sm.config,
        cache_paths=cache_paths_by_video(sm.input.embeddings),
    )
