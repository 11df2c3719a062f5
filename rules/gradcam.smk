# Grad-CAM of the report's gallery frames, with the selected configuration's model (lus_core.cnn.gradcam).


rule gradcam:
    priority: AFTER_TRAIN_PRIORITY  # finish a model's chain before more trainings (lus_core.workflow.dag)
    input:
        unpack(all_models),
        summary=L.summary(),
        index=L.frame_index(),
    output:
        L.gradcam_index(),
    params:
        config=step_config("gradcam"),
        code=script_code("gradcam"),
    log:
        L.log("gradcam"),
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/gradcam.py"
