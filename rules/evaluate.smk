# Every configuration on the test patients (the deployed one chosen on the training patients),
# then the self-contained HTML report and the manifest of the files `lus predict` loads.


for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    # several model seeds: each replica's validation scores, which every replica of its scope
    # chooses on (their mean; lus_core.evaluation.seeds)
    if len(SEEDS) > 1:

        rule:
            name:
                rule_name("validate", scope)
            priority: AFTER_TRAIN_PRIORITY
            input:
                **evaluate_inputs(scope),
                split=L.split(),
                index=L.frame_index(),
            output:
                validation=S.validation(),
            params:
                input_keys=evaluate_input_keys(),
                config=step_config("validate"),
                scope=scope,
                code=script_code("validate"),
            log:
                S.log("validate"),
            benchmark:
                S.benchmark("validate")
            conda:
                "../envs/lus.yaml"
            script:
                "../workflow_scripts/validate.py"

    rule:
        name:
            rule_name("evaluate", scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            **evaluate_inputs(scope),
            seed_validations=[L.scoped(r).validation() for r in replicas(config, split_scope(scope)[0])]
            if len(SEEDS) > 1
            else [],
            confidence_tables=[S.confidence_table(b) for b in BACKBONES],
            split=L.split(),
            index=L.frame_index(),
            skipped=L.skipped_videos(),
        output:
            matrix=report(S.matrix(), caption="../report/matrix.rst", category="Evaluation"),
            summary=S.summary(),
            selected=S.selected_predictions(),
            figures=report(
                directory(S.figures_dir()),
                patterns=["{name}.png"],
                caption="../report/figures.rst",
                category="Evaluation",
            ),
        params:
            input_keys=evaluate_input_keys(),
            config=step_config("evaluate"),
            scope=scope,
            # the figures of the first seed's replica only (the others' numbers are pooled)
            figures=split_scope(scope)[1] == 0,
            code=script_code("evaluate"),
        log:
            S.log("evaluate"),
        benchmark:
            S.benchmark("evaluate")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/evaluate.py"


# The estimate of the whole procedure (split.outer_folds > 1): every patient's score from the outer
# fold that held them out, pooled; the stability of the choice across the folds.
if OUTER_SCOPES:
    NESTED_REPLICAS = [r for o in OUTER_SCOPES for r in replicas(config, o)]  # every outer fold, every seed

    rule nested_estimate:
        priority: AFTER_TRAIN_PRIORITY
        input:
            summaries=[L.scoped(s).summary() for s in NESTED_REPLICAS],
            selected=[L.scoped(s).selected_predictions() for s in NESTED_REPLICAS],
            videos=[L.scoped(s).video_table(b) for s in NESTED_REPLICAS for b in BACKBONES] if VIDEO_MODEL else [],
            split=L.split(),
        output:
            estimate=L.nested(),
            predictions=L.nested_predictions(),
            videos=L.nested_videos(),
            figure=L.nested_figure(),
        params:
            config=step_config("nested_estimate"),
            scopes=NESTED_REPLICAS,
            seeds=[SEEDS[split_scope(s)[1]] for s in NESTED_REPLICAS],
            video_tables={s: {b: L.scoped(s).video_table(b) for b in BACKBONES} for s in NESTED_REPLICAS}
            if VIDEO_MODEL
            else {},
            code=script_code("nested_estimate"),
        log:
            L.log("nested_estimate"),
        benchmark:
            L.benchmark("nested_estimate")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/nested_estimate.py"


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
        nested=[L.nested(), L.nested_figure()] if OUTER_SCOPES else [],
        # several model seeds without outer folds: the other seeds' test scores (a nested run's are
        # in its estimate)
        seed_summaries=[] if OUTER_SCOPES else [L.scoped(r).summary() for r in replicas(config, "")[1:]],
        # the model card's data (sources, devices, burned-in annotation) and the selected model's checksum
        stores=all_frame_stores,
        models=[L.model(b, "all") for b in BACKBONES],
    output:
        report=L.report(),
        model_card=L.model_card(),
    params:
        config=step_config("report"),
        seeds=SEEDS,
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
        # train.ensemble: folds: lus predict scores with the fold models too
        fold_models=[L.model(b, f) for b in BACKBONES for f in FOLDS] if ENSEMBLE else [],
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
