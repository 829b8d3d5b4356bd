rule train:
    """Train one learned table row (prior, solver, cost weights) and keep the best validation
    weights."""
    input:
        train="results/{preset}/data/{system}_train.nc",
        val="results/{preset}/data/{system}_val.nc",
    output:
        checkpoint="results/{preset}/models/{system}/{row}/seed{seed}.pt",
    log:
        "results/{preset}/logs/train/{system}/{row}/seed{seed}.log",
    benchmark:
        "results/{preset}/benchmarks/train/{system}/{row}/seed{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        model=lambda w: CFG["model"][w.system],
        train=lambda w: row_train(CFG["train"][w.system], w.row),
    script:
        "../scripts/train.py"
