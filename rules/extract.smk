# Frame store: one job per video (the store and its extraction record), a check of every store
# against its record, then an index (CSV + HDF5 virtual dataset) over all videos.


rule extract_frames:
    input:
        video=video_source,
        labels=video_label_inputs,
    output:
        store=f"{R}/frames/{{video}}.h5",
        record=f"{R}/frames/{{video}}.record.json",
    params:
        entry=video_params,
        frames=config["frames"],
        classes=CLASSES,
        code=script_code("extract_frames"),
    log:
        f"{R}/logs/extract/{{video}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{video}}.tsv"
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
