# Annoy indexes over training patients in each similarity space, and the k nearest
# other-patient training frames of every frame (the fallback's and the galleries' input).


rule build_index:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        predictions=L.predictions("{backbone}"),
        index=L.frame_index(),
    output:
        **L.index_files("{backbone}", "{space}"),
    wildcard_constraints:
        space="raw|softmax|embedding",
    params:
        config=step_config("build_index"),
        code=script_code("build_index"),
    # one thread: a two-thread job waits for both cores, i.e. for every training to finish
    threads: 1
    log:
        L.log("index", "{backbone}", "{space}"),
    benchmark:
        L.benchmark("index", "{backbone}", "{space}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/build_index.py"


use rule build_index as build_tsne_index with:
    output:
        **L.index_files("{backbone}", "{space}", tsne=True),
    wildcard_constraints:
        space="tsne",


rule query_neighbors:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        unpack(index_files),
        predictions=L.predictions("{backbone}"),
        index=L.frame_index(),
    output:
        L.neighbors("{backbone}", "{space}"),
    params:
        config=step_config("query_neighbors"),
        code=script_code("query_neighbors"),
    log:
        L.log("neighbors", "{backbone}", "{space}"),
    benchmark:
        L.benchmark("neighbors", "{backbone}", "{space}")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/query_neighbors.py"
