from pathlib import Path

from lus_core.report.html import run_report
from lus_core.workflow.script import config_of, step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    eval_dir = Path(sm.input.summary).parent
    curves = {name.removeprefix("curve_"): path for name, path in sm.input.items() if name.startswith("curve_")}
    extra = {
        "figures": [
            {"file": str(Path(curve).resolve()), "title": f"Training curve: {b} (all training patients)"}
            for b, curve in curves.items()  # by name, not position
        ],
        # the confidence steps' metrics.csv are not repeated: the report's confidence section
        # shows each (method, metric) once, computed by lus_core.confidence.failure_metrics
        "gradcam": sm.input.gradcam,
        "nested": dict(zip(("estimate", "figure"), sm.input.nested, strict=True)) if sm.input.nested else None,
    }
    run_report(str(eval_dir), sm.input.split, config_of(sm), sm.output[0], extra=extra)
