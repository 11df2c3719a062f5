from lus_core.similarity.step import run_build_index
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_build_index(
        sm.wildcards.space,
        sm.input.predictions,
        sm.input.index,
        sm.output.ann,
        sm.output.ids,
        sm.output.meta,
        sm.output.get("tsne"),
        config_of(sm),
        n_jobs=sm.threads,
    )
