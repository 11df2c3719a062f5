from lus_core.confidence.report import run_confidence_report
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_confidence_report(
        sm.input.predictions,
        list(sm.input.summaries),
        list(sm.input.scores),
        sm.output.table,
        sm.output.risk,
        sm.output.reliability,
        config_of(sm),
    )
