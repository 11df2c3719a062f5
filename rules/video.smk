# The learned video-level score (lus_core.videolevel.model): attention pooling over a video's frame
# softmax or embeddings, out-of-fold for training videos, beside the fixed aggregations, in every scope.

for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    rule:
        name:
            rule_name("fit_video_model", scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            predictions=S.predictions("{backbone}"),
            split=L.split(),
        output:
            table=S.video_table("{backbone}"),
            model=S.video_model("{backbone}"),
        params:
            config=step_config("fit_video_model", seed),
            scope=scope,
            code=script_code("fit_video_model"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        log:
            S.log("video", "{backbone}"),
        benchmark:
            S.benchmark("video", "{backbone}")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/fit_video_model.py"
