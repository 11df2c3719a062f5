# "Is the CNN right?" models, fitted on out-of-fold predictions of training patients only, in every scope.

for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    # every method of a backbone in one job: a job's start (Python, scikit-learn, SciPy) took
    # longer than most methods' fits; each method still has its own files
    rule:
        name:
            rule_name("fit_confidence", scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            S.predictions("{backbone}"),
        output:
            **confidence_outputs(S),
        params:
            methods=METHODS,
            config=step_config("fit_confidence", seed),
            code=script_code("fit_confidence"),
        log:
            S.log("confidence", "{backbone}", "fit"),
        benchmark:
            S.benchmark("confidence", "{backbone}", "fit")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/fit_confidence.py"

    rule:
        name:
            rule_name("confidence_report", scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            predictions=S.predictions("{backbone}"),
            summaries=[S.confidence_summary("{backbone}", m) for m in METHODS],
            scores=[S.confidence_scores("{backbone}", m) for m in METHODS],
        output:
            table=S.confidence_table("{backbone}"),
            risk=report(
                S.confidence_figure("{backbone}", "risk_coverage"),
                caption="../report/risk_coverage.rst",
                category="Confidence",
            ),
            reliability=report(
                S.confidence_figure("{backbone}", "reliability"),
                caption="../report/reliability.rst",
                category="Confidence",
            ),
        params:
            config=step_config("confidence_report", seed),
            code=script_code("confidence_report"),
        log:
            S.log("confidence", "{backbone}", "report"),
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/confidence_report.py"
