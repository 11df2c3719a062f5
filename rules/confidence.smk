# "Is the CNN right?" models, fitted on out-of-fold predictions of training patients only.


rule fit_confidence:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        L.predictions("{backbone}"),
    output:
        model=L.confidence_model("{backbone}", "{method}"),
        scores=L.confidence_scores("{backbone}", "{method}"),
        summary=L.confidence_summary("{backbone}", "{method}"),
    params:
        config=step_config("fit_confidence"),
        code=script_code("fit_confidence"),
    log:
        L.log("confidence", "{backbone}", "{method}"),
    benchmark:
        L.benchmark("confidence", "{backbone}", "{method}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/fit_confidence.py"


rule confidence_report:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        predictions=L.predictions("{backbone}"),
        summaries=[L.confidence_summary("{backbone}", m) for m in METHODS],
        scores=[L.confidence_scores("{backbone}", m) for m in METHODS],
    output:
        table=L.confidence_table("{backbone}"),
        risk=report(
            L.confidence_figure("{backbone}", "risk_coverage"),
            caption="../report/risk_coverage.rst",
            category="Confidence",
        ),
        reliability=report(
            L.confidence_figure("{backbone}", "reliability"),
            caption="../report/reliability.rst",
            category="Confidence",
        ),
    params:
        config=step_config("confidence_report"),
        code=script_code("confidence_report"),
    log:
        L.log("confidence", "{backbone}", "report"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/confidence_report.py"
