"""Tune the EnKS baseline (members, inflation, lag, localisation radius) on a validation split.

The initial ensemble of every window is drawn from the training truth, as the row does
(``evaluate.<system>.enks.init``): ``gaussian`` draws from the per-component mean and covariance
of the training states, ``states`` picks training states themselves (a window's state at a time,
both drawn uniformly). The observation error variance is the split's ``noise_var``; the model is
the true RK4 step. For every setting it prints the validation R-score (mean squared error of the
smoother mean over all entries, physical units), the mean ensemble spread and the seconds of the
smoother.

    python benchmarks/tune_enks.py --val results/quick/data/l63_val.nc \\
        --train results/quick/data/l63_train.nc --init states,gaussian --members 10,20,50 \\
        --inflation 1.0,1.05 --lag none
    python benchmarks/tune_enks.py --val results/cpu/data/l96_val.nc \\
        --train results/cpu/data/l96_train.nc --members 20,40 --radius 0,2,4 --lag 20
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from fourdvarnet.data import interpolate, load_split
from fourdvarnet.enks import ensemble_from_states, ensemble_smoother
from fourdvarnet.priors import true_prior


def climatology(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-component mean ``(C,)`` and covariance ``(C, C)`` of states ``(sample, C, time)``."""
    states = x.double().transpose(1, 2).reshape(-1, x.shape[1])
    return states.mean(dim=0), torch.cov(states.T)


def parse_list(text: str, kind):
    return [None if v.strip().lower() == "none" else kind(v) for v in text.split(",")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--val", required=True, help="validation split NetCDF")
    p.add_argument("--train", required=True, help="training split NetCDF (climatology)")
    p.add_argument(
        "--init", default="gaussian", help="comma-separated initial ensembles: gaussian, states"
    )
    p.add_argument("--members", default="10,20,50", help="comma-separated ensemble sizes")
    p.add_argument("--inflation", default="1.0,1.02,1.05,1.1", help="comma-separated factors")
    p.add_argument("--lag", default="none", help="comma-separated lags in steps, 'none' = window")
    p.add_argument(
        "--radius", default="0", help="comma-separated localisation half-widths (0: none)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    val = load_split(args.val, dtype=torch.float64).to(device)
    train_x = load_split(args.train).x
    mean0, cov0 = climatology(train_x)
    train_x = train_x.to(device)
    system, dt, noise_var = val.attrs["system"], float(val.attrs["dt"]), val.attrs["noise_var"]
    prior = true_prior(system, dt).to(device)
    first_guess = interpolate(val.y, val.mask, mean0.to(device))
    print(
        f"{system}: {len(val)} validation windows, obs_var {noise_var:g}, "
        f"R-score of the interpolated observations {float(((first_guess - val.x) ** 2).mean()):.4g}"
    )
    head = (
        ("init", 8), ("members", 7), ("inflation", 9), ("lag", 5), ("radius", 6), ("R-score", 9),
        ("spread", 8),
    )  # fmt: skip
    print(" ".join(f"{name:>{width}}" for name, width in head), f"{'seconds':>8}")
    inits = [v.strip() for v in args.init.split(",")]
    if not set(inits) <= {"gaussian", "states"}:
        p.error(f"--init {args.init!r}: expected gaussian and/or states")
    settings = itertools.product(
        inits,
        parse_list(args.members, int),
        parse_list(args.inflation, float),
        parse_list(args.lag, int),
        parse_list(args.radius, float),
    )
    for init, members, inflation, lag, radius in settings:
        gen = torch.Generator(device=device).manual_seed(args.seed)
        first = None
        if init == "states":
            first = ensemble_from_states(train_x, len(val), members, gen, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        mean, var = ensemble_smoother(
            val.y,
            val.mask,
            prior.step,
            mean0,
            cov0,
            noise_var,
            members,
            inflation,
            lag,
            gen,
            init=first,
            radius=radius,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        r_score = float(((mean - val.x) ** 2).mean())
        spread = float(var.mean())
        print(
            f"{init:>8} {members:>7} {inflation:>9.3g} {str(lag).lower():>5} {radius:>6.3g} "
            f"{r_score:>9.4g} "
            f"{spread:>8.3g} {seconds:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
