# CNN training (one job per backbone and fold, plus `all` on every training patient) and
# inference (out-of-fold for training patients, the `all` model for test patients), in every
# scope (lus_core.split.scopes: the root, and each outer fold with split.outer_folds > 1).
# Resources are declared so the same rules schedule locally and on SLURM; profiles set them.

for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    rule:
        name:
            rule_name("train", scope)
        input:
            index=L.frame_index(),
            split=L.split(),
            embeddings=embedding_caches,
        output:
            model=S.model("{backbone}", "{fold}"),
            metrics=S.model_metrics("{backbone}", "{fold}"),
            curve=S.model_curve("{backbone}", "{fold}"),
        params:
            config=step_config("train", seed),
            scope=scope,
            # resumable state lives outside the declared outputs (Snakemake deletes those on failure)
            checkpoint_dir=lambda w, S=S: S.checkpoints(w.backbone, w.fold),
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
            S.log("train", "{backbone}", "{fold}"),
        benchmark:
            S.benchmark("train", "{backbone}", "{fold}")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/train.py"

    rule:
        name:
            rule_name("infer", scope)
        input:
            unpack(fold_models(S)),
            index=L.frame_index(),
            split=L.split(),
            embeddings=embedding_caches,
        output:
            S.predictions("{backbone}"),
        params:
            folds=FOLDS + ["all"],
            config=step_config("infer", seed),
            scope=scope,
            code=script_code("infer"),
        threads: 1
        priority: AFTER_TRAIN_PRIORITY
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=0,
        log:
            S.log("infer", "{backbone}"),
        benchmark:
            S.benchmark("infer", "{backbone}")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/infer.py"
