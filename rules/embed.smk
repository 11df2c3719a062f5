# Frozen-encoder embeddings (lus_core.cnn.embedding_cache), one file per video and backbone: the
# output layer of a `finetune: head` backbone then trains on them in seconds instead of running the
# encoder every epoch. Backbones that train end to end need none and get no embed jobs.
# The videos are embedded in train.embedding_jobs jobs per backbone (one rule per job, each
# with a fixed, hash-chosen share of the videos, lus_core.workflow.dag.job_shards): one job per
# video spent most of its time starting Python and torch.

# no rules at all when no backbone embeds (the default run): each rule costs DAG start-up time
EMBEDDING = any(cache_enabled(config, b) for b in BACKBONES)
EMBED_SHARDS = job_shards(VIDEOS, config["train"]["embedding_jobs"]) if EMBEDDING else {}

for shard, shard_videos in EMBED_SHARDS.items():

    rule:
        name:
            rule_name("embed", shard)
        input:
            stores=[L.store(v) for v in shard_videos],
        output:
            [L.embedding("{backbone}", v) for v in shard_videos],
        params:
            config=step_config("embed"),
            code=script_code("embed"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=lambda w, input: 10 + len(input.stores),
            gpu=0,
        log:
            L.log("embed", "{backbone}", str(shard)),
        benchmark:
            L.benchmark("embed", "{backbone}", str(shard))
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/embed.py"
