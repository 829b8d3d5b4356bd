"""Benchmark: wall time of training epochs at the paper's sizes, eager against the fast path.

    python benchmarks/bench_epoch.py --system l63 --row supervised-genn-conv --epochs 2

Simulates the paper preset's data of one system (config.yaml), trains the row for a few epochs
with a fixed number of solver iterations, and prints the time of each epoch (training steps and
the validation solve) on both paths.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fourdvarnet.cli import load_config
from fourdvarnet.config import ModelConfig, from_dict, train_config
from fourdvarnet.model import build_model
from fourdvarnet.pipeline import load_normalised, parse_row, setup_logging, simulate
from fourdvarnet.training import pick_device, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--system", default="l63")
    ap.add_argument("--row", default="supervised-genn-conv")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--paths", nargs="+", default=["fast", "eager"])
    args = ap.parse_args()
    setup_logging()
    cfg = load_config(args.config, args.preset)
    device = pick_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {s: Path(tmp) / f"{s}.nc" for s in ("train", "val", "test")}
        t = time.perf_counter()
        simulate(cfg["data"][args.system], paths)
        print(f"simulate {args.system}: {time.perf_counter() - t:.1f} s")
        train_set, norm, fill = load_normalised(paths["train"])
        val_set, _, _ = load_normalised(paths["val"])
        tcfg = dict(cfg["train"][args.system], epochs=args.epochs, pretrain_epochs=0)
        tcfg["schedule"] = [{"epoch": 0, "n_iter": args.n_iter, "lr": 1e-3}]
        tcfg = train_config(tcfg)
        mcfg = from_dict(ModelConfig, cfg["model"][args.system], "model")
        exp = parse_row(args.row, args.system)
        for path in args.paths:
            torch.manual_seed(0)
            model = build_model(
                exp, float(train_set.attrs["dt"]), norm, fill, mcfg, learn_lambdas=True
            ).to(device)
            record = train(
                model,
                exp,
                tcfg,
                train_set.to(device),
                val_set.to(device),
                std=norm.std,
                progress=False,
                fast=path == "fast",
            )
            secs = [round(h["seconds"], 2) for h in record["history"]]
            print(
                f"{args.system} {args.row} {path}: {len(train_set)} windows, batch "
                f"{tcfg.batch_size}, {args.n_iter} iterations, epoch seconds {secs}, "
                f"losses {[round(h['loss'], 5) for h in record['history']]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
