# Annoy indexes over training patients in each similarity space, and the k nearest
# other-patient training frames of every frame (the fallback's and the galleries' input).


rule build_index:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        predictions=f"{R}/predictions/{{backbone}}.h5",
        index=f"{R}/frame_index.csv",
    output:
        ann=f"{R}/index/{{backbone}}/{{space}}.ann",
        ids=f"{R}/index/{{backbone}}/{{space}}.ids.csv",
        meta=f"{R}/index/{{backbone}}/{{space}}.json",
    wildcard_constraints:
        space="raw|softmax|embedding",
    params:
        similarity=config["similarity"],
        code=script_code("build_index"),
    # one thread: a two-thread job waits for both cores, i.e. for every training to finish
    threads: 1
    log:
        f"{R}/logs/index/{{backbone}}/{{space}}.log",
    benchmark:
        f"{R}/benchmarks/index/{{backbone}}/{{space}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/build_index.py"


use rule build_index as build_tsne_index with:
    output:
        ann=f"{R}/index/{{backbone}}/{{space}}.ann",
        ids=f"{R}/index/{{backbone}}/{{space}}.ids.csv",
        meta=f"{R}/index/{{backbone}}/{{space}}.json",
        tsne=f"{R}/index/{{backbone}}/{{space}}.tsne.pkl",
    wildcard_constraints:
        space="tsne",


rule query_neighbors:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        unpack(index_files),
        predictions=f"{R}/predictions/{{backbone}}.h5",
        index=f"{R}/frame_index.csv",
    output:
        f"{R}/neighbors/{{backbone}}/{{space}}.h5",
    params:
        similarity=config["similarity"],
        code=script_code("query_neighbors"),
    log:
        f"{R}/logs/neighbors/{{backbone}}/{{space}}.log",
    benchmark:
        f"{R}/benchmarks/neighbors/{{backbone}}/{{space}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/query_neighbors.py"
