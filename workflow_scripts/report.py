from pathlib import Path

from lus_core.report import run_report
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    eval_dir = Path(sm.input.summary).parent
    backbones = sm.config["train"]["backbones"]
    extra = {
        "figures": [
            {"file": str(Path(curve).resolve()), "title": f"Training curve: {b} (all training patients)"}
            for b, curve in ((b, sm.input[f"curve_{b}"]) for b in backbones)  # by name, not position
        ],
        # the confidence steps' metrics.csv are not repeated: the report's confidence section
        # shows each (method, metric) once, computed by lus_core.confidence.metrics
        "gradcam": sm.input.gradcam,
    }
    run_report(str(eval_dir), sm.input.split, sm.config, sm.output[0], extra=extra)
