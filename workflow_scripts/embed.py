import torch

from lus_core.embed_cache import encode_video
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    encode_video(sm.input.store, sm.output[0], sm.wildcards.backbone, sm.config)
