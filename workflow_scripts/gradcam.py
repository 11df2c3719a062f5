from lus_core.report.gradcam_step import run_gradcam_step
from lus_core.workflow.script import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    # each backbone's `all` model, by name (rules/common.smk: all_models)
    models = {name.removeprefix("model_"): path for name, path in sm.input.items() if name.startswith("model_")}
    run_gradcam_step(sm.input.summary, models, sm.input.index, sm.output[0])
