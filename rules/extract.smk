# Frame store: one store (and its extraction record) per video, written by frames.extract_jobs
# jobs (one rule per job, each with a fixed, hash-chosen share of the videos,
# lus_core.workflow.dag.job_shards: one job per video spent most of its time starting Python); then a
# check of every store against its record, then an index (CSV + HDF5 virtual dataset) over all.

EXTRACT_SHARDS = job_shards(VIDEOS, config["frames"]["extract_jobs"])

for shard, shard_videos in EXTRACT_SHARDS.items():

    rule:
        name:
            rule_name("extract_frames", shard)
        input:
            videos=[VIDEOS[v]["path"] for v in shard_videos],
            labels=video_label_inputs,
        output:
            stores=[L.store(v) for v in shard_videos],
            records=[L.store_record(v) for v in shard_videos],
        params:
            # the videos' label entries: editing one label re-extracts its job's videos only
            entries=shard_entries(shard_videos),
            config=step_config("extract_frames"),
            code=script_code("extract_frames"),
        resources:
            runtime=lambda w, input: 10 + len(input.videos),
        log:
            L.log("extract", str(shard)),
        benchmark:
            L.benchmark("extract", str(shard))
        conda:
            "../envs/lus.yaml"
        script:
            "../workflow_scripts/extract_frames.py"


# A damaged store stops the run here, before frame_index would replace (and, failing, delete)
# the index; the bad file is moved aside so that the next run re-extracts it.
rule verify_frame_stores:
    input:
        stores=all_frame_stores,
        records=all_store_records,
    output:
        L.stores_verified(),
    params:
        config=step_config("verify_frame_stores"),
        code=script_code("verify_frame_stores"),
    log:
        L.log("verify_frame_stores"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/verify_frame_stores.py"


rule frame_index:
    input:
        stores=all_frame_stores,
        verified=L.stores_verified(),
    output:
        index=L.frame_index(),
        vds=L.frames_vds(),
        skipped=L.skipped_videos(),
    params:
        config=step_config("frame_index"),
        code=script_code("frame_index"),
    log:
        L.log("frame_index"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/frame_index.py"
