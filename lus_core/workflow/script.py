"""What a workflow script needs besides its one call into lus_core: its rule's config slice and its
log file. Kept apart from the declarations (lus_core.workflow.step_config), which only the Snakefile
reads: editing a declaration reruns the steps whose slice changes, not every step."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path


def config_of(snakemake) -> dict:
    """The config slice a workflow script hands to lus_core (its rule's ``params.config``)."""
    return json.loads(snakemake.params.config)


@contextlib.contextmanager
def step_logging(snakemake):
    """Send a script's stderr and logging to the rule's log file."""
    log_path = snakemake.log[0] if snakemake.log else None
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        old = sys.stderr
        sys.stderr = log_file
        logging.basicConfig(
            stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
        )
        try:
            yield
        except Exception:
            logging.getLogger("lus").exception("step failed")
            raise
        finally:
            sys.stderr = old
