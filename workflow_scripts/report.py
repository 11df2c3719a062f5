from pathlib import Path

from lus_core.report.html import run_report
from lus_core.runs.model_card import store_facts, write_model_card
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
        # several model seeds in a single-split run: every seed's test scores (the first seed's first)
        "seeds": sm.params.seeds,
        "seed_summaries": [sm.input.summary, *sm.input.seed_summaries] if sm.input.seed_summaries else [],
        "burned_in": sorted(store_facts(sm.input.stores).query("burned_in == 'YES'")["video"]),
    }
    config = config_of(sm)
    run_report(str(eval_dir), sm.input.split, config, sm.output.report, extra=extra)
    models = {Path(m).parent.name: m for m in sm.input.models}
    write_model_card(sm.output.model_card, sm.input.summary, sm.input.split, sm.input.index, config, models,
                     Path(config["results"]).name, sm.input.nested[0] if sm.input.nested else None)
