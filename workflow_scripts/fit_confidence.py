from lus_core.confidence.step import run_fit_confidence
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    # every method of the backbone, each to its own files (rules/common.smk: confidence_outputs)
    for method in sm.params.methods:
        run_fit_confidence(sm.input[0], method, sm.output[f"model_{method}"], sm.output[f"scores_{method}"],
                           sm.output[f"summary_{method}"], config_of(sm))
