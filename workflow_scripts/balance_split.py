from lus_core.split.step import run_balance_split
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_balance_split(sm.input[0], sm.output[0], config_of(sm), n_jobs=sm.threads)
