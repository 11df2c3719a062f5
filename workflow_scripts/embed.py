import torch

from lus_core.embed_cache import encode_videos
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    encode_videos(list(sm.input.stores), list(sm.output), sm.wildcards.backbone, sm.config)
