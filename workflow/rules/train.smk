rule pretrain_genn:
    """Pre-train the GENN prior of a system and seed on one-step prediction, once for every GENN
    row of that seed (the validation split: the plateau rule and the prior's ODE-score)."""
    input:
        train="results/{preset}/data/{system}_train.nc",
        val="results/{preset}/data/{system}_val.nc",
    output:
        prior="results/{preset}/models/{system}/genn-pretrained/seed{seed}.pt",
    log:
        "results/{preset}/logs/pretrain/{system}/seed{seed}.log",
    benchmark:
        "results/{preset}/benchmarks/pretrain/{system}/seed{seed}.tsv"
    priority: 10**9  # before every GENN row of its seed
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        model=lambda w: CFG["model"][w.system],
        train=lambda w: system_train(CFG["train"][w.system]),
    script:
        "../scripts/pretrain.py"


rule train:
    """Train one learned table row (prior, solver, cost weights) and keep the best validation
    weights."""
    input:
        unpack(train_inputs),
    output:
        checkpoint="results/{preset}/models/{system}/{row}/seed{seed}.pt",
    log:
        "results/{preset}/logs/train/{system}/{row}/seed{seed}.log",
    benchmark:
        "results/{preset}/benchmarks/train/{system}/{row}/seed{seed}.tsv"
    priority: train_priority
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
