"""Command line: every pipeline stage without Snakemake.

    fourdvarnet simulate --system l63 --out-dir results/quick/data
    fourdvarnet train --system l63 --row supervised-genn-conv --seed 0 \\
        --data-dir results/quick/data --out model.pt
    fourdvarnet evaluate --system l63 --row supervised-genn-conv --seed 0 \\
        --data-dir results/quick/data --checkpoint model.pt --out recon.nc --scores scores.json
    fourdvarnet table --system l63 --scores a.json b.json --out table1.csv

Options shared by all: ``--config config.yaml`` (the workflow's config) and ``--preset NAME``.
The package's modules (torch) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def load_config(path: str | Path, preset: str | None = None) -> dict:
    from .config import check_train_rows, resolve_preset

    raw = yaml.safe_load(Path(path).read_text())
    if preset:
        raw["preset"] = preset
    cfg = resolve_preset(raw)
    check_train_rows(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="fourdvarnet", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--config", default="config.yaml", help="workflow config (default: %(default)s)"
    )
    ap.add_argument("--preset", default=None, help="preset to apply (default: the config's)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--log", default=None, help="also write the log to this file (it goes to stderr anyway)"
    )
    sub = ap.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("simulate", help="generate the twin-experiment data of one system")
    s.add_argument("--system", required=True)
    s.add_argument("--out-dir", required=True)

    for name in ("train", "evaluate"):
        s = sub.add_parser(name, help=f"{name} one table row")
        s.add_argument("--system", required=True)
        s.add_argument(
            "--row", required=True, help="scheme-prior-solver, e.g. supervised-genn-conv"
        )
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--data-dir", required=True)
        s.add_argument("--out", required=True)
        if name == "evaluate":
            s.add_argument("--checkpoint", default=None, help="the learned row's checkpoint")
            s.add_argument("--scores", required=True, help="JSON file of the scores")

    s = sub.add_parser("table", help="gather score files into a table with the paper's numbers")
    s.add_argument("--system", required=True)
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--out", required=True)

    args = ap.parse_args(argv)
    from . import pipeline

    with pipeline.job_log(args.log, also_stderr=True, tag=args.stage):
        _run(ap, args, pipeline)


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace, pipeline) -> None:
    """The command ``args.stage``, its log already set up."""
    if args.stage == "table":
        from .tables import write_table

        write_table(args.scores, args.system, args.out)
        return
    cfg = load_config(args.config, args.preset)
    system = args.system
    if system not in cfg["data"]:
        ap.error(f"--system {system!r}: the config defines {sorted(cfg['data'])}")
    if args.stage == "simulate":
        pipeline.simulate(
            cfg["data"][system],
            {sp: Path(args.out_dir) / f"{system}_{sp}.nc" for sp in ("train", "val", "test")},
        )
        return
    data_dir = Path(args.data_dir)  # train and evaluate only: simulate has no --data-dir
    if args.stage == "train":
        from .config import row_train

        pipeline.train_row(
            args.row,
            system,
            args.seed,
            data_dir / f"{system}_train.nc",
            data_dir / f"{system}_val.nc",
            cfg["model"][system],
            row_train(cfg["train"][system], args.row),
            args.out,
            args.threads,
        )
    else:
        scores = pipeline.evaluate_row(
            args.row,
            system,
            args.seed,
            data_dir / f"{system}_test.nc",
            cfg["model"][system],
            cfg["evaluate"][system],
            args.out,
            args.scores,
            args.checkpoint,
            args.threads,
        )
        print(", ".join(f"{k}: {v:.4g}" for k, v in scores.items() if isinstance(v, float)))


if __name__ == "__main__":
    main()
