from lus_core.confidence.step import run_fit_confidence
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_fit_confidence(
        sm.input[0], sm.wildcards.method, sm.output.model, sm.output.scores, sm.output.summary, config_of(sm)
    )
