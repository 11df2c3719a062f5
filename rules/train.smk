# CNN training (one job per backbone and fold, plus `all` on every training patient) and
# inference (out-of-fold for training patients, the `all` model for test patients).
# Resources are declared so the same rules schedule locally and on SLURM; profiles set them.


rule train:
    input:
        index=L.frame_index(),
        split=L.split(),
        embeddings=embedding_caches,
    output:
        model=L.model("{backbone}", "{fold}"),
        metrics=L.model_metrics("{backbone}", "{fold}"),
        curve=L.model_curve("{backbone}", "{fold}"),
    params:
        config=step_config("train"),
        # resumable state lives outside the declared outputs (Snakemake deletes those on failure)
        checkpoint_dir=lambda w: L.checkpoints(w.backbone, w.fold),
        code=script_code("train"),
    # one thread per job: on 2 cores two single-thread trainings finished the default run's 8 jobs
    # in 234 s against 331 s for one two-thread job at a time; --set-threads train=N on big nodes
    threads: 1
    priority: lambda w: train_priority(config, w.backbone, w.fold)
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    log:
        L.log("train", "{backbone}", "{fold}"),
    benchmark:
        L.benchmark("train", "{backbone}", "{fold}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/train.py"


rule infer:
    input:
        unpack(fold_models),
        index=L.frame_index(),
        split=L.split(),
        embeddings=embedding_caches,
    output:
        L.predictions("{backbone}"),
    params:
        folds=FOLDS + ["all"],
        config=step_config("infer"),
        code=script_code("infer"),
    threads: 1
    priority: AFTER_TRAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0,
    log:
        L.log("infer", "{backbone}"),
    benchmark:
        L.benchmark("infer", "{backbone}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/infer.py"
