# The learned video-level score (lus_core.videolevel.model): attention pooling over a video's frame
# softmax or embeddings, out-of-fold for training videos, beside the fixed aggregations.


rule fit_video_model:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        predictions=L.predictions("{backbone}"),
        split=L.split(),
    output:
        table=L.video_table("{backbone}"),
        model=L.video_model("{backbone}"),
    params:
        config=step_config("fit_video_model"),
        code=script_code("fit_video_model"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        L.log("video", "{backbone}"),
    benchmark:
        L.benchmark("video", "{backbone}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/fit_video_model.py"
