from lus_core.evaluation.step import inputs_from_keys, run_evaluate, video_inputs_from_keys
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    # inputs by name (rules/common.smk: evaluate_inputs / evaluate_input_keys), never by position
    named = dict(sm.input.items())
    predictions, confidence, neighbors = inputs_from_keys(sm.params.input_keys, named)
    video_tables = video_inputs_from_keys(sm.params.input_keys, named)
    run_evaluate(
        predictions,
        confidence,
        neighbors,
        sm.input.split,
        sm.input.index,
        sm.output.matrix,
        sm.output.summary,
        sm.output.figures,
        config_of(sm),
        video_tables=video_tables,
        scope=sm.params.scope,
        figures=sm.params.figures,
        out_selected_csv=sm.output.selected,
        seed_validations=list(sm.input.seed_validations),
    )
