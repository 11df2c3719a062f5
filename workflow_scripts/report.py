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
            for b, curve in zip(backbones, sm.input.curves, strict=True)
        ],
        "tables": {
            f"Confidence methods ({b})": str(Path(t).resolve())
            for b, t in zip(backbones, sm.input.confidence_tables, strict=True)
        },
        "gradcam": sm.input.gradcam,
    }
    run_report(str(eval_dir), sm.input.split, sm.config, sm.output[0], extra=extra)
