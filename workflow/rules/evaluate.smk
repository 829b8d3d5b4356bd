rule evaluate:
    """Reconstruct the test split with one table row and score it (R-, 4DVar- and ODE-scores)."""
    input:
        test="results/{preset}/data/{system}_test.nc",
        train="results/{preset}/data/{system}_train.nc",  # the EnKS's initial states
        checkpoint=checkpoint_for,
    output:
        recon="results/{preset}/eval/{system}/{row}/seed{seed}.nc",
        scores="results/{preset}/eval/{system}/{row}/seed{seed}.json",
    log:
        "results/{preset}/logs/evaluate/{system}/{row}/seed{seed}.log",
    benchmark:
        "results/{preset}/benchmarks/evaluate/{system}/{row}/seed{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        model=lambda w: CFG["model"][w.system],
        evaluate=lambda w: CFG["evaluate"][w.system],
        run=RUN,
        preset=PRESET,
    script:
        "../scripts/evaluate.py"
