import torch

from lus_core.cnn.embedding_cache import encode_videos
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    encode_videos(list(sm.input.stores), list(sm.output), sm.wildcards.backbone, config_of(sm))
