from lus_core.similarity.step import run_query_neighbors
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_query_neighbors(
        sm.wildcards.space,
        sm.input.predictions,
        sm.input.index,
        sm.input.ann,
        sm.input.ids,
        sm.input.meta,
        sm.input.get("tsne"),
        sm.output[0],
        config_of(sm),
    )
