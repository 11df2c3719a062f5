# "Is the CNN right?" models, fitted on out-of-fold predictions of training patients only.


rule fit_confidence:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        f"{R}/predictions/{{backbone}}.h5",
    output:
        model=f"{R}/confidence/{{backbone}}/{{method}}.joblib",
        scores=f"{R}/confidence/{{backbone}}/{{method}}.csv",
        summary=f"{R}/confidence/{{backbone}}/{{method}}.json",
    params:
        confidence=config["confidence"],
        code=script_code("fit_confidence"),
    log:
        f"{R}/logs/confidence/{{backbone}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/confidence/{{backbone}}/{{method}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/fit_confidence.py"


rule confidence_report:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        predictions=f"{R}/predictions/{{backbone}}.h5",
        summaries=expand(f"{R}/confidence/{{{{backbone}}}}/{{method}}.json", method=METHODS),
        scores=expand(f"{R}/confidence/{{{{backbone}}}}/{{method}}.csv", method=METHODS),
    output:
        table=f"{R}/confidence/{{backbone}}/metrics.csv",
        risk=report(
            f"{R}/confidence/{{backbone}}/risk_coverage.png",
            caption="../report/risk_coverage.rst",
            category="Confidence",
        ),
        reliability=report(
            f"{R}/confidence/{{backbone}}/reliability.png",
            caption="../report/reliability.rst",
            category="Confidence",
        ),
    params:
        code=script_code("confidence_report"),
    log:
        f"{R}/logs/confidence/{{backbone}}/report.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/confidence_report.py"
