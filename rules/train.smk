# CNN training (one job per backbone and fold, plus `all` on every training patient) and
# inference (out-of-fold for training patients, the `all` model for test patients).
# Resources are declared so the same rules schedule locally and on SLURM; profiles set them.


rule train:
    input:
        index=f"{R}/frame_index.csv",
        split=f"{R}/split.json",
        embeddings=embedding_caches,
    output:
        model=f"{R}/models/{{backbone}}/{{fold}}.pt",
        metrics=f"{R}/models/{{backbone}}/{{fold}}.metrics.csv",
        curve=f"{R}/models/{{backbone}}/{{fold}}.curve.png",
    params:
        train=config["train"],
        seed=config["seed"],
        # resumable state lives outside the declared outputs (Snakemake deletes those on failure)
        checkpoint_dir=lambda w: f"{R}/checkpoints/{w.backbone}/{w.fold}",
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
        f"{R}/logs/train/{{backbone}}/{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{backbone}}/{{fold}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/train.py"


rule infer:
    input:
        unpack(fold_models),
        index=f"{R}/frame_index.csv",
        split=f"{R}/split.json",
        embeddings=embedding_caches,
    output:
        f"{R}/predictions/{{backbone}}.h5",
    params:
        folds=FOLDS + ["all"],
        code=script_code("infer"),
    threads: 1
    priority: AFTER_TRAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0,
    log:
        f"{R}/logs/infer/{{backbone}}.log",
    benchmark:
        f"{R}/benchmarks/infer/{{backbone}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/infer.py"
