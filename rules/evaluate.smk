# Every configuration on the test patients, then the self-contained HTML report.


rule evaluate:
    input:
        predictions=expand(f"{R}/predictions/{{backbone}}.h5", backbone=BACKBONES),
        scores=expand(f"{R}/confidence/{{backbone}}/{{method}}.csv", backbone=BACKBONES, method=METHODS),
        summaries=expand(f"{R}/confidence/{{backbone}}/{{method}}.json", backbone=BACKBONES, method=METHODS),
        neighbors=expand(f"{R}/neighbors/{{backbone}}/{{space}}.h5", backbone=BACKBONES, space=SPACES),
        confidence_tables=expand(f"{R}/confidence/{{backbone}}/metrics.csv", backbone=BACKBONES),
        split=f"{R}/split.json",
        index=f"{R}/frame_index.csv",
    output:
        matrix=report(f"{R}/eval/matrix.csv", caption="../report/matrix.rst", category="Evaluation"),
        summary=f"{R}/eval/summary.json",
        figures=report(
            directory(f"{R}/eval/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Evaluation",
        ),
    params:
        code=code_version("evaluation", "metrics", "figures", "similarity"),
    log:
        f"{R}/logs/evaluate.log",
    benchmark:
        f"{R}/benchmarks/evaluate.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule report:
    input:
        matrix=f"{R}/eval/matrix.csv",
        summary=f"{R}/eval/summary.json",
        figures=f"{R}/eval/figures",
        split=f"{R}/split.json",
        index=f"{R}/frame_index.csv",
        confidence_tables=expand(f"{R}/confidence/{{backbone}}/metrics.csv", backbone=BACKBONES),
        curves=expand(f"{R}/models/{{backbone}}/all.curve.png", backbone=BACKBONES),
        gradcam=f"{R}/gradcam/index.json",
    output:
        f"{R}/report/index.html",
    params:
        code=code_version("report", "report_forest"),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/report.py"


rule manifest:
    input:
        models=expand(f"{R}/models/{{backbone}}/all.pt", backbone=BACKBONES),
        confidence=expand(f"{R}/confidence/{{backbone}}/{{method}}.joblib", backbone=BACKBONES, method=METHODS),
        summaries=expand(f"{R}/confidence/{{backbone}}/{{method}}.json", backbone=BACKBONES, method=METHODS),
        indexes=[f for b in BACKBONES for s in SPACES for f in index_paths(b, s).values()],
        index=f"{R}/frame_index.csv",
        summary=f"{R}/eval/summary.json",
        matrix=f"{R}/eval/matrix.csv",
    output:
        f"{R}/manifest.json",
    params:
        code=code_version("manifest"),
    log:
        f"{R}/logs/manifest.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/manifest.py"
