from lus_core.evaluation.nested import run_nested_estimate
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_nested_estimate(
        sm.params.scopes,
        list(sm.input.summaries),
        list(sm.input.selected),
        sm.input.split,
        config_of(sm),
        sm.output.estimate,
        sm.output.predictions,
        sm.output.videos,
        sm.output.figure,
        video_tables=sm.params.video_tables or None,
        seeds=sm.params.seeds,
    )
