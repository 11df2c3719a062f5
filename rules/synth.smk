# The embedded synthetic LUS cohort (only when dataset.synthetic.enabled).


rule synth:
    output:
        labels=f"{SYNTH_DIR}/labels.csv",
        videos=[VIDEOS[v]["path"] for v in sorted(VIDEOS)] if SYNTHETIC else [],
    params:
        synthetic=config["dataset"]["synthetic"],
        classes=CLASSES,
        seed=config["seed"],
        code=script_code("synth"),
    log:
        f"{R}/logs/synth.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/synth.py"
