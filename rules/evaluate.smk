# Every configuration on the test patients (the deployed one chosen on the training patients),
# then the self-contained HTML report.


rule evaluate:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        unpack(evaluate_inputs),
        confidence_tables=expand(f"{R}/confidence/{{backbone}}/metrics.csv", backbone=BACKBONES),
        split=f"{R}/split.json",
        index=f"{R}/frame_index.csv",
        skipped=f"{R}/skipped_videos.csv",
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
        input_keys=evaluate_input_keys(),
        code=script_code("evaluate"),
    log:
        f"{R}/logs/evaluate.log",
    benchmark:
        f"{R}/benchmarks/evaluate.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule report:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        unpack(report_curve_inputs),
        matrix=f"{R}/eval/matrix.csv",
        summary=f"{R}/eval/summary.json",
        figures=f"{R}/eval/figures",
        split=f"{R}/split.json",
        index=f"{R}/frame_index.csv",
        confidence_tables=expand(f"{R}/confidence/{{backbone}}/metrics.csv", backbone=BACKBONES),
        gradcam=f"{R}/gradcam/index.json",
    output:
        f"{R}/report/index.html",
    params:
        code=script_code("report"),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/report.py"


rule manifest:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        models=expand(f"{R}/models/{{backbone}}/all.pt", backbone=BACKBONES),
        confidence=expand(f"{R}/confidence/{{backbone}}/{{method}}.joblib", backbone=BACKBONES, method=METHODS),
        summaries=expand(f"{R}/confidence/{{backbone}}/{{method}}.json", backbone=BACKBONES, method=METHODS),
        indexes=[f for b in BACKBONES for s in SPACES for f in index_paths(b, s).values()],
        video_models=expand(f"{R}/video/{{backbone}}.pt", backbone=BACKBONES) if VIDEO_MODEL else [],
        index=f"{R}/frame_index.csv",
        summary=f"{R}/eval/summary.json",
        matrix=f"{R}/eval/matrix.csv",
        stores=all_frame_stores,
    output:
        f"{R}/manifest.json",
    params:
        code=script_code("manifest"),
    log:
        f"{R}/logs/manifest.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/manifest.py"
