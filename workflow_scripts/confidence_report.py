from lus_core.confidence.step import run_confidence_report
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_confidence_report(
        sm.input.predictions,
        list(sm.input.summaries),
        list(sm.input.scores),
        sm.output.table,
        sm.output.risk,
        sm.output.reliability,
        sm.config,
    )
