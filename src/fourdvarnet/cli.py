"""Command line: every pipeline stage without Snakemake.

    fourdvarnet simulate --system l63 --out-dir results/quick/data
    fourdvarnet train --system l63 --row supervised-genn-conv --seed 0 \\
        --data-dir results/quick/data --out model.pt
    fourdvarnet evaluate --system l63 --row supervised-genn-conv --seed 0 \\
        --data-dir results/quick/data --checkpoint model.pt --out recon.nc --scores scores.json
    fourdvarnet table --system l63 --scores a.json b.json --out table1.csv --pairs pairs.csv
    fourdvarnet figures --figure fig2 --evals-dir results/quick/eval --out-dir figures

Options shared by all: ``--config PATH`` (the workflow's config: ``./config.yaml``, else the
``config.yaml`` of the repository the package was installed from), ``--preset NAME`` and
``--threads N`` (torch CPU threads, 1 by default).
The package's modules (torch) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

#: The config of the repository the package was installed from (src/fourdvarnet/ -> ../../).
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"

#: The workflow's config schema, beside the config file (workflow/schemas/), else the one of the
#: repository the package was installed from.
SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
REPO_SCHEMA = Path(__file__).resolve().parents[2] / SCHEMA

#: Figures 2-4 of the paper and the system each one draws (as in workflow/rules/common.smk).
FIGURE_SYSTEMS = {"fig2": "l63", "fig3": "l63", "fig4": "l96"}


def find_config(path: str | Path | None) -> Path:
    """The config file to read: ``path`` when given, else ``./config.yaml``, else the
    repository's (``REPO_CONFIG``). Exits with one line naming what was tried when none exists.
    """
    tried = [Path(path)] if path else [Path("config.yaml"), REPO_CONFIG]
    for p in tried:
        if p.is_file():
            return p
    names = ", ".join(str(p.absolute()) for p in tried)
    sys.exit(f"fourdvarnet: error: no config file found (tried {names}); use --config PATH")


def load_config(path: str | Path, preset: str | None = None, sets: list[str] = ()) -> dict:
    """The config file with ``preset`` applied, then the ``KEY=VALUE`` overrides of ``sets``
    (``KEY`` a dotted path, ``VALUE`` read as YAML), as Snakemake's ``--config`` would."""
    from .config import check_train_rows, resolve_preset, validate_schema

    raw = yaml.safe_load(Path(path).read_text())
    if preset:
        raw["preset"] = preset
    schema = Path(path).parent / SCHEMA
    if not schema.is_file():  # a config file of one's own: the package's repository's schema
        schema = REPO_SCHEMA
    cfg = resolve_preset(raw, dotted_overrides(sets))
    if schema.is_file():
        validate_schema(cfg, schema, f"{path} with preset {cfg.get('preset')!r} and --set applied")
    check_train_rows(cfg)
    return cfg


def dotted_overrides(sets: list[str]) -> dict:
    """``['evaluate.l63.lbfgs.n_iter=1000']`` -> ``{'evaluate': {'l63': {'lbfgs': {'n_iter':
    1000}}}}``."""
    out: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"fourdvarnet: error: --set {item!r}: expected KEY=VALUE")
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line: the options shared by all, then one subcommand per stage."""
    ap = argparse.ArgumentParser(prog="fourdvarnet", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help=f"workflow config (default: ./config.yaml if it exists, else {REPO_CONFIG})",
    )
    ap.add_argument("--preset", default=None, help="preset to apply (default: the config's)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value after the preset, e.g. evaluate.l63.lbfgs.n_iter=1000 "
        "(repeatable; VALUE read as YAML)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads of torch and numpy (default: %(default)s, one per process)",
    )
    ap.add_argument(
        "--log", default=None, help="also write the log to this file (it goes to stderr anyway)"
    )
    ap.add_argument(
        "--debug", action="store_true", help="an error's traceback on the console (else one line)"
    )
    _add_stages(ap.add_subparsers(dest="stage", required=True))
    return ap


def _add_stages(sub) -> None:
    """The subcommands (``sub``: the parser's subparsers) and their options."""
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
            s.add_argument(
                "--split",
                default="test",
                choices=("test", "val"),
                help="the split to score (val: to choose a setting without the test split)",
            )

    s = sub.add_parser("table", help="gather score files into a table with the paper's numbers")
    s.add_argument("--system", required=True)
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--pairs", default=None, help="also write every pair's paired interval to this CSV"
    )
    s.add_argument(
        "--label", default="", help="the preset column's value (default: the score files')"
    )

    s = sub.add_parser(
        "figures", help="draw Figure 2, 3 or 4 from the evaluation files of the rows it compares"
    )
    s.add_argument("--figure", required=True, choices=sorted(FIGURE_SYSTEMS))
    s.add_argument(
        "--system", default=None, help="default: the figure's (fig2, fig3: l63; fig4: l96)"
    )
    s.add_argument("--seed", type=int, default=None, help="default: the config's first seed")
    s.add_argument(
        "--evals-dir",
        required=True,
        help="holds <system>/<row>/seed<seed>.nc for each row of the config's "
        "figures.<figure> (the workflow writes results/<preset>/eval)",
    )
    s.add_argument("--out-dir", required=True, help="gets <figure>.pdf and <figure>.png")


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: give at least 1")
    if not {"numpy", "torch"} & set(sys.modules):  # the console script: before they load
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    config = find_config(args.config) if args.stage != "table" else None
    import torch

    from . import pipeline

    torch.set_num_threads(args.threads)
    try:
        errors = "raise" if args.debug else "caller"
        with pipeline.job_log(args.log, also_stderr=True, tag=args.stage, errors=errors):
            _run(ap, args, pipeline, config)
    except KeyboardInterrupt:
        raise SystemExit(f"fourdvarnet {args.stage}: interrupted") from None
    except (ValueError, OSError, KeyError) as e:  # bad input: one line, the traceback on --debug
        if args.debug:
            raise
        where = f" (traceback in {args.log})" if args.log else " (--debug: the traceback)"
        raise SystemExit(f"fourdvarnet {args.stage}: error: {e}{where}") from None


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace, pipeline, config) -> None:
    """The command ``args.stage``, its log already set up; ``config``: the config file."""
    if args.stage == "table":
        from .tables import write_pairs, write_table

        write_table(args.scores, args.system, args.out, preset=args.label or None)
        if args.pairs:
            write_pairs(args.scores, args.system, args.pairs)
        return
    cfg = load_config(config, args.preset, args.set)
    system = args.system or FIGURE_SYSTEMS[args.figure]
    if system not in cfg["data"]:
        ap.error(f"--system {system!r}: the config defines {sorted(cfg['data'])}")
    if args.stage == "figures":
        _figures(ap, args, cfg, system)
        return
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
            data_dir / f"{system}_{args.split}.nc",
            cfg["model"][system],
            cfg["evaluate"][system],
            args.out,
            args.scores,
            args.checkpoint,
            args.threads,
            train_path=data_dir / f"{system}_train.nc",
            preset=cfg.get("preset", ""),
            run=cfg.get("run", ""),
        )
        print(", ".join(f"{k}: {v:.4g}" for k, v in scores.items() if isinstance(v, float)))


def _figures(ap: argparse.ArgumentParser, args: argparse.Namespace, cfg: dict, system: str):
    """Draw ``args.figure`` from the evaluation files of the rows of ``figures.<figure>``."""
    rows = (cfg.get("figures") or {}).get(args.figure)
    if not rows:
        ap.error(f"--figure {args.figure}: the config has no rows under figures.{args.figure}")
    seed = args.seed if args.seed is not None else int((cfg.get("seeds") or [0])[0])
    evals = {
        label: Path(args.evals_dir) / system / row / f"seed{seed}.nc" for label, row in rows.items()
    }
    missing = [f"{label!r}: {path}" for label, path in evals.items() if not path.is_file()]
    if missing:
        ap.error(
            f"missing evaluation file(s) of figures.{args.figure} (write them with "
            f"`fourdvarnet evaluate --out`): {'; '.join(missing)}"
        )
    from . import figures

    out = Path(args.out_dir)
    pdf, png = out / f"{args.figure}.pdf", out / f"{args.figure}.png"
    getattr(figures, args.figure)(evals, pdf, png, preset=cfg.get("preset", ""))
    print(f"wrote {pdf} and {png}")


if __name__ == "__main__":
    main()
