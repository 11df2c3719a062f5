from lus_core.evaluation.step import inputs_from_keys, run_validate, video_inputs_from_keys
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    # the same named inputs as the replica's evaluate (rules/common.smk: evaluate_inputs)
    named = dict(sm.input.items())
    predictions, confidence, neighbors = inputs_from_keys(sm.params.input_keys, named)
    video_tables = video_inputs_from_keys(sm.params.input_keys, named)
    run_validate(predictions, confidence, neighbors, sm.input.split, sm.input.index, sm.output.validation,
                 config_of(sm), video_tables=video_tables, scope=sm.params.scope)
