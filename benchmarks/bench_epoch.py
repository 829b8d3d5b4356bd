"""Benchmark: wall time of training epochs at the paper's sizes, eager against the fast path.

    python benchmarks/bench_epoch.py --system l63 --row supervised-genn-conv --epochs 2

Simulates a preset's data of one system (config.yaml), trains the row for a few epochs with a
fixed number of solver iterations and the preset's batch size, and prints the time of each
epoch's training steps and the total (validation solves included) on each path: ``fast`` (the
CUDA graphs, on a CUDA device only) and ``eager``. On the CPU, which has no fast path
(docs/performance.md), only ``eager`` runs.

    python benchmarks/bench_epoch.py --preset cpu --row supervised-rk4-conv --epochs 1 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fourdvarnet.cli import load_config
from fourdvarnet.config import ModelConfig, from_dict, row_train, train_config
from fourdvarnet.fast import graphs_available
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
    ap.add_argument(
        "--paths",
        nargs="+",
        choices=["fast", "eager"],
        help="default: fast and eager on CUDA, eager on the CPU",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.preset)
    device = pick_device("auto")
    cuda = graphs_available(device)
    paths = args.paths or (["fast", "eager"] if cuda else ["eager"])
    if "fast" in paths and not cuda:
        ap.error(
            "--paths fast: the fast path is CUDA graphs and needs a CUDA device; the CPU runs "
            "eager only (its compiled-gradient path was removed: docs/performance.md)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        files = {s: Path(tmp) / f"{s}.nc" for s in ("train", "val", "test")}
        t = time.perf_counter()
        simulate(cfg["data"][args.system], files)
        print(f"simulate {args.system}: {time.perf_counter() - t:.1f} s")
        train_set, norm, fill = load_normalised(files["train"])
        val_set, _, _ = load_normalised(files["val"])
        base = dict(row_train(cfg["train"][args.system], args.row), epochs=args.epochs)
        base["pretrain_epochs"] = 0
        base["schedule"] = [{"epoch": 0, "n_iter": args.n_iter, "lr": 1e-3}]
        base["max_seconds"] = 0
        tcfg = train_config(base)
        mcfg = from_dict(ModelConfig, cfg["model"][args.system], "model")
        exp = parse_row(args.row, args.system)
        for path in paths:
            torch.manual_seed(0)
            model = build_model(
                exp, float(train_set.attrs["dt"]), norm, fill, mcfg, learn_lambdas=True
            ).to(device)
            t = time.perf_counter()
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
            hist = record["history"]
            secs = [round(h["seconds"], 2) for h in hist]
            print(
                f"{args.system} {args.row} {path}: {len(train_set)} windows, batch "
                f"{tcfg.batch_size}, {args.n_iter} iterations, epoch seconds {secs}, total "
                f"{time.perf_counter() - t:.1f} s (validation included), runner "
                f"{record.get('fast_path')}, losses {[round(h['loss'], 5) for h in hist]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
