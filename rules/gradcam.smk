# Grad-CAM of the report's gallery frames, with the selected configuration's model (lus_core.gradcam).


rule gradcam:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.dag)
    input:
        summary=f"{R}/eval/summary.json",
        models=expand(f"{R}/models/{{backbone}}/all.pt", backbone=BACKBONES),
        index=f"{R}/frame_index.csv",
    output:
        f"{R}/gradcam/index.json",
    params:
        code=script_code("gradcam"),
    log:
        f"{R}/logs/gradcam.log",
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/gradcam.py"
