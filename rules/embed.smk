# Frozen-encoder embeddings, one job per video and backbone (lus_core.embed_cache): the output
# layer of a `finetune: head` backbone then trains on them in seconds instead of running the
# encoder every epoch. Backbones that train end to end need none and get no embed jobs.


rule embed:
    input:
        store=f"{R}/frames/{{video}}.h5",
    output:
        f"{R}/embeddings/{{backbone}}/{{video}}.h5",
    params:
        encoder=lambda w: encoder_settings(config, w.backbone),
        code=script_code("embed"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    log:
        f"{R}/logs/embed/{{backbone}}/{{video}}.log",
    benchmark:
        f"{R}/benchmarks/embed/{{backbone}}/{{video}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/embed.py"
