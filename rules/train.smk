# CNN training (one job per backbone and fold, plus `all` on every training patient) and
# inference (out-of-fold for training patients, the `all` model for test patients), in every
# scope (lus_core.split.scopes: the root, and each outer fold with split.outer_folds > 1).
# Resources are declared so the same rules schedule locally and on SLURM; profiles set them.

for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    # a backbone trained end to end: one job per fold (two single-thread trainings side by side
    # use 2 cores best)
    rule:
        name:
            rule_name("train", scope)
        wildcard_constraints:
            backbone="|".join(FULL_BACKBONES) or "(?!)",  # (?!) matches nothing: every backbone is a head
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

    # output layers on a frozen encoder's cached embeddings: every fold in one job (each fold's
    # training is under a second; a job's start - Python, torch, its optimiser's compiler stack -
    # took 6 s of the 8 each fold's job used to take)
    if HEAD_BACKBONES:

        rule:
            name:
                rule_name("train_heads", scope)
            wildcard_constraints:
                backbone="|".join(HEAD_BACKBONES),
            input:
                index=L.frame_index(),
                split=L.split(),
                embeddings=embedding_caches,
            output:
                **fold_model_outputs(S),
            params:
                folds=FOLDS + ["all"],
                config=step_config("train", seed),
                scope=scope,
                checkpoint_dirs=lambda w, S=S: {f: S.checkpoints(w.backbone, f) for f in FOLDS + ["all"]},
                code=script_code("train"),
            threads: 1
            priority: 0
            resources:
                mem_mb=4000,
                runtime=120,
                gpu=0,
            log:
                S.log("train", "{backbone}", "heads"),
            benchmark:
                S.benchmark("train", "{backbone}", "heads")
            conda:
                "../envs/lus.yaml"
            script:
                "../workflow_scripts/train_heads.py"

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
