from lus_core.similarity.step import run_build_index
from lus_core.workflow import step_logging

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
        sm.config,
        n_jobs=sm.threads,
    )
