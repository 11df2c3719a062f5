# Every configuration on the test patients (the deployed one chosen on the training patients),
# then the self-contained HTML report and the manifest of the files `lus predict` loads.


rule evaluate:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        unpack(evaluate_inputs),
        confidence_tables=[L.confidence_table(b) for b in BACKBONES],
        split=L.split(),
        index=L.frame_index(),
        skipped=L.skipped_videos(),
    output:
        matrix=report(L.matrix(), caption="../report/matrix.rst", category="Evaluation"),
        summary=L.summary(),
        figures=report(
            directory(L.figures_dir()),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Evaluation",
        ),
    params:
        input_keys=evaluate_input_keys(),
        config=step_config("evaluate"),
        code=script_code("evaluate"),
    log:
        L.log("evaluate"),
    benchmark:
        L.benchmark("evaluate")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule report:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        unpack(report_curve_inputs),
        matrix=L.matrix(),
        summary=L.summary(),
        figures=L.figures_dir(),
        split=L.split(),
        index=L.frame_index(),
        confidence_tables=[L.confidence_table(b) for b in BACKBONES],
        gradcam=L.gradcam_index(),
        # the model card's data (sources, devices, burned-in annotation) and the selected model's checksum
        stores=all_frame_stores,
        models=[L.model(b, "all") for b in BACKBONES],
    output:
        report=L.report(),
        model_card=L.model_card(),
    params:
        config=step_config("report"),
        code=script_code("report"),
    log:
        L.log("report"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/report.py"


rule manifest:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        models=[L.model(b, "all") for b in BACKBONES],
        confidence=[L.confidence_model(b, m) for b in BACKBONES for m in METHODS],
        summaries=[L.confidence_summary(b, m) for b in BACKBONES for m in METHODS],
        indexes=[f for b in BACKBONES for s in SPACES for f in L.index_files(b, s).values()],
        video_models=[L.video_model(b) for b in BACKBONES] if VIDEO_MODEL else [],
        index=L.frame_index(),
        summary=L.summary(),
        matrix=L.matrix(),
        stores=all_frame_stores,
    output:
        L.manifest(),
    params:
        config=step_config("manifest"),
        code=script_code("manifest"),
    log:
        L.log("manifest"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/manifest.py"
