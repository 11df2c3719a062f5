# Frame store: one store (and its extraction record) per video, written by frames.extract_jobs
# jobs (one rule per job, each with a fixed, hash-chosen share of the videos,
# lus_core.dag.job_shards: one job per video spent most of its time starting Python); then a
# check of every store against its record, then an index (CSV + HDF5 virtual dataset) over all.

EXTRACT_SHARDS = job_shards(VIDEOS, config["frames"]["extract_jobs"])

for shard, shard_videos in EXTRACT_SHARDS.items():

    rule:
        name:
            f"extract_frames_{shard}"
        input:
            videos=[VIDEOS[v]["path"] for v in shard_videos],
            labels=video_label_inputs,
        output:
            stores=[f"{R}/frames/{v}.h5" for v in shard_videos],
            records=[f"{R}/frames/{v}.record.json" for v in shard_videos],
        params:
            # the videos' label entries: editing one label re-extracts its job's videos only
            entries=shard_entries(shard_videos),
            frames=config["frames"],
            classes=CLASSES,
            findings=config["dataset"]["findings"],
            code=script_code("extract_frames"),
        resources:
            runtime=lambda w, input: 10 + len(input.videos),
        log:
            f"{R}/logs/extract/{shard}.log",
        benchmark:
            f"{R}/benchmarks/extract/{shard}.tsv"
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
        f"{R}/frames/verified.json",
    params:
        code=script_code("verify_frame_stores"),
    log:
        f"{R}/logs/verify_frame_stores.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/verify_frame_stores.py"


rule frame_index:
    input:
        stores=all_frame_stores,
        verified=f"{R}/frames/verified.json",
    output:
        index=f"{R}/frame_index.csv",
        vds=f"{R}/frames.h5",
        skipped=f"{R}/skipped_videos.csv",
    params:
        code=script_code("frame_index"),
    log:
        f"{R}/logs/frame_index.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/frame_index.py"
