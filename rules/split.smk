# Exact balanced choice of test patients and patient-grouped folds on the rest.


rule balance_split:
    input:
        L.frame_index(),
    output:
        L.split(),
    params:
        config=step_config("balance_split"),
        code=script_code("balance_split"),
    threads: 2
    log:
        L.log("balance_split"),
    benchmark:
        L.benchmark("balance_split")
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/balance_split.py"
