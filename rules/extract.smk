# Frame store: one job per video, then an index (CSV + HDF5 virtual dataset) over all videos.


rule extract_frames:
    input:
        video=video_source,
        labels=video_label_inputs,
    output:
        f"{R}/frames/{{video}}.h5",
    params:
        entry=video_params,
        frames=config["frames"],
        classes=CLASSES,
        code=code_version("extract", "video", "ingest", "frame_store"),
    log:
        f"{R}/logs/extract/{{video}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{video}}.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/extract_frames.py"


rule frame_index:
    input:
        all_frame_stores,
    output:
        index=f"{R}/frame_index.csv",
        vds=f"{R}/frames.h5",
        skipped=f"{R}/skipped_videos.csv",
    params:
        code=code_version("extract", "frame_store"),
    log:
        f"{R}/logs/frame_index.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/frame_index.py"
