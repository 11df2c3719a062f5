# Exact balanced choice of test patients and patient-grouped folds on the rest.


rule balance_split:
    input:
        f"{R}/frame_index.csv",
    output:
        f"{R}/split.json",
    params:
        split=config["split"],
        seed=config["seed"],
        code=script_code("balance_split"),
    threads: 2
    log:
        f"{R}/logs/balance_split.log",
    benchmark:
        f"{R}/benchmarks/balance_split.tsv"
    conda:
        "../envs/lus.yaml"
    script:
        "../workflow_scripts/balance_split.py"
