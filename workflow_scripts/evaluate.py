from lus_core.evaluation import run_evaluate
from lus_core.workflow import step_logging

sm = snakemake  # noqa: F821
with step_logging(sm):
    backbones = sm.config["train"]["backbones"]
    methods = sm.config["confidence"]["methods"]
    spaces = sm.config["similarity"]["spaces"]
    # expand() order in rules/evaluate.smk: backbone outer, method / space inner
    confidence = {
        (b, m): (sm.input.scores[i * len(methods) + j], sm.input.summaries[i * len(methods) + j])
        for i, b in enumerate(backbones)
        for j, m in enumerate(methods)
    }
    neighbors = {
        (b, s): sm.input.neighbors[i * len(spaces) + j] for i, b in enumerate(backbones) for j, s in enumerate(spaces)
    }
    run_evaluate(
        dict(zip(backbones, sm.input.predictions, strict=True)),
        confidence,
        neighbors,
        sm.input.split,
        sm.input.index,
        sm.output.matrix,
        sm.output.summary,
        sm.output.figures,
        sm.config,
    )
