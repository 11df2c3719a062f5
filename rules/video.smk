# The learned video-level score (lus_core.video_model): attention pooling over a video's frame
# softmax or embeddings, out-of-fold for training videos, beside the fixed aggregations.


rule fit_video_model:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        predictions=f"{R}/predictions/{{backbone}}.h5",
        split=f"{R}/split.json",
    output:
        table=f"{R}/video/{{backbone}}.csv",
        model=f"{R}/video/{{backbone}}.pt",
    params:
        video_model=config["video_model"],
        code=script_code("fit_video_model"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        f"{R}/logs/video/{{backbone}}.log",
    benchmark:
        f"{R}/benchmarks/video/{{backbone}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/fit_video_model.py"
