# The embedded synthetic LUS cohort (only when dataset.synthetic.enabled).


rule synth:
    output:
        labels=L.synthetic_labels(),
        videos=[VIDEOS[v]["path"] for v in sorted(VIDEOS)] if SYNTHETIC else [],
    params:
        config=step_config("synth"),
        code=script_code("synth"),
    log:
        L.log("synth"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/synth.py"
