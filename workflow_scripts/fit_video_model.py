import torch

from lus_core.videolevel.model import run_video_model
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    torch.set_num_threads(sm.threads)
    run_video_model(sm.input.predictions, sm.input.split, sm.output.table, sm.output.model, config_of(sm),
                    scope=sm.params.scope)
