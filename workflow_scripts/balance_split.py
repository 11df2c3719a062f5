from lus_core.split import run_balance_split
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    run_balance_split(sm.input[0], sm.output[0], sm.config, n_jobs=sm.threads)
