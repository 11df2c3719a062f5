# Annoy indexes over training patients in each similarity space, and the k nearest
# other-patient training frames of every frame (the fallback's and the galleries' input), in every scope.

for scope, seed, (name, tsne) in ((scope, seed, rule) for scope, seed in TRAINING_SCOPES
                                   for rule in (("build_index", False), ("build_tsne_index", True))):
    S = L.scoped(scope)

    # the t-SNE space also writes its fitted map: a rule of its own with one more output
    rule:
        name:
            rule_name(name, scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            predictions=S.predictions("{backbone}"),
            index=L.frame_index(),
        output:
            **S.index_files("{backbone}", "{space}", tsne=tsne),
        wildcard_constraints:
            space="tsne" if tsne else "raw|softmax|embedding",
        params:
            config=step_config("build_index", seed),
            code=script_code("build_index"),
        # one thread: a two-thread job waits for both cores, i.e. for every training to finish
        threads: 1
        log:
            S.log("index", "{backbone}", "{space}"),
        benchmark:
            S.benchmark("index", "{backbone}", "{space}")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/build_index.py"


for scope, seed in TRAINING_SCOPES:
    S = L.scoped(scope)

    rule:
        name:
            rule_name("query_neighbors", scope)
        priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
        input:
            unpack(index_files(S)),
            predictions=S.predictions("{backbone}"),
            index=L.frame_index(),
        output:
            S.neighbors("{backbone}", "{space}"),
        params:
            config=step_config("query_neighbors", seed),
            code=script_code("query_neighbors"),
        log:
            S.log("neighbors", "{backbone}", "{space}"),
        benchmark:
            S.benchmark("neighbors", "{backbone}", "{space}")
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/query_neighbors.py"
