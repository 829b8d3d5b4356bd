rule simulate:
    """Integrate the true system and sample the train, validation and test windows."""
    output:
        train="results/{preset}/data/{system}_train.nc",
        val="results/{preset}/data/{system}_val.nc",
        test="results/{preset}/data/{system}_test.nc",
    log:
        "results/{preset}/logs/simulate/{system}.log",
    benchmark:
        "results/{preset}/benchmarks/simulate/{system}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        data=data_config,
    script:
        "../scripts/simulate.py"
