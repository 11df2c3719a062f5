from lus_core.gradcam import run_gradcam_step
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    models = dict(zip(sm.config["train"]["backbones"], sm.input.models, strict=True))
    run_gradcam_step(sm.input.summary, models, sm.input.index, sm.output[0])
