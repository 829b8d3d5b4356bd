"""Compare the learned solvers' gradient normalisations on the validation split.

Trains one row with one ``model.<system>.grad_norm`` option (and any other model or training
value, ``--set`` / ``--train-set``) and scores it on the *validation* split (never the test
split) with the pipeline's own code: validation R-score, its value on the observed entries, the
smoothness ratio ``roughness`` (mean squared second difference in time of ``x_hat`` over the
truth's), the cost weights after training and the 4DVar cost over the last solver iterations.
One JSON line per run goes to ``--out``.

    python benchmarks/compare_grad_norm.py --preset quick --data-dir results/quick/data \\
        --row supervised-rk4-conv --grad-norm initial --out grad_norm.jsonl
    # the supervised rows' initial cost weights (train.<system>.sup_lambdas)
    python benchmarks/compare_grad_norm.py --preset quick --data-dir results/quick/data \\
        --row supervised-rk4-conv --grad-norm max --train-set 'sup_lambdas=[0.01,1.0]' \\
        --out lambdas.jsonl
    # the paper's L63 data size with a shortened schedule:
    python benchmarks/compare_grad_norm.py --preset paper --data-dir /tmp/paper-data \\
        --row supervised-rk4-conv --grad-norm initial --epochs 6 \\
        --schedule '[[0, 5, 1e-3], [2, 10, 1e-3], [4, 20, 1e-3]]' --out grad_norm.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from fourdvarnet import pipeline
from fourdvarnet.cli import load_config
from fourdvarnet.config import row_train


def overrides(items: list[str]) -> dict:
    """``key=JSON`` command-line items as a dict."""
    return {key: json.loads(value) for key, value in (item.split("=", 1) for item in items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--system", default="l63")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--row", required=True)
    ap.add_argument("--grad-norm", default=None, help="default: the config's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--pretrain-epochs", type=int, default=None)
    ap.add_argument("--schedule", default=None, help="JSON [[epoch, n_iter, lr], ...]")
    ap.add_argument("--set", action="append", default=[], help="model key=JSON value")
    ap.add_argument("--train-set", action="append", default=[], help="train key=JSON value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pretrained", default=None, help="a GENN row's pre-trained prior file")
    ap.add_argument("--label", default="", help="a name for the run in the output")
    ap.add_argument("--out", required=True, help="JSON lines file to append to")
    args = ap.parse_args()

    cfg = load_config(args.config, args.preset)
    system, data = args.system, Path(args.data_dir)
    model_cfg = dict(cfg["model"][system], **overrides(args.set))
    if args.grad_norm:
        model_cfg["grad_norm"] = args.grad_norm
    train_cfg = dict(row_train(cfg["train"][system], args.row), **overrides(args.train_set))
    if args.epochs is not None:
        train_cfg["epochs"] = args.epochs
    if args.pretrain_epochs is not None:
        train_cfg["pretrain_epochs"] = args.pretrain_epochs
    if args.schedule:
        train_cfg["schedule"] = [
            {"epoch": e, "n_iter": k, "lr": lr} for e, k, lr in json.loads(args.schedule)
        ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        record = pipeline.train_row(
            args.row,
            system,
            args.seed,
            data / f"{system}_train.nc",
            data / f"{system}_val.nc",
            model_cfg,
            train_cfg,
            tmp / "model.pt",
            args.threads,
            pretrained=args.pretrained,
        )
        train_s = time.perf_counter() - t0
        scores = pipeline.evaluate_row(
            args.row,
            system,
            args.seed,
            data / f"{system}_val.nc",  # validation only: the test split stays unseen
            model_cfg,
            cfg["evaluate"][system],
            tmp / "recon.nc",
            tmp / "scores.json",
            tmp / "model.pt",
            args.threads,
        )
        with xr.open_dataset(tmp / "recon.nc") as ds:
            path_u = ds["pathway_fourdvar_score"].values.astype(float)
            lambdas = [round(v, 4) for v in json.loads(ds.attrs["cost_lambdas"])]
        var = float(ds.attrs["train_std"]) ** 2  # normalised to physical units
    tail = np.diff(path_u[-6:])
    result = {
        "preset": args.preset,
        "system": system,
        "row": args.row,
        "grad_norm": model_cfg["grad_norm"],
        "model_set": args.set,
        "train_set": args.train_set,
        "seed": args.seed,
        "epochs": train_cfg["epochs"],
        "best_epoch": record["best_epoch"] + 1,
        "val_r_score": scores["r_score"],
        "roughness": scores["roughness"],
        "val_r_score_observed": scores["r_score_observed"],
        "cost_lambdas": lambdas,
        "fourdvar_score": scores["fourdvar_score"],
        "cost_last5_decreasing": bool((tail <= 0).all()),
        "cost_last5_max_rise": float(tail.max()),
        "train_seconds": train_s,
        "val_history": [round(h["val_r"] * var, 4) for h in record["history"]],
        "epoch_seconds": [round(h["seconds"], 1) for h in record["history"]],
        "label": args.label,
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
