"""Benchmark: the importance-sampling posterior mean (Bayes floor) of Lorenz-63 test windows.

Makes L63 test sets like the quick preset (200 windows) and like the paper (2,000 windows): the
windows start at random times in a 5,000-step stretch of one long RK4 trajectory (as the test
split's range [15000, 20000]), x1 observed every 8 steps, none in the first and last 10 steps,
Gaussian noise of variance 2. Or, with ``--test-file``, scores a NetCDF test split written by
``fourdvarnet simulate``. The bank is M members of S steps after a spin-up (2,000 x 5,000).

Prints, per test-set size: bank and index time (shared), posterior time, R-score of the
posterior mean (MSE over all entries and components, physical units), mean posterior variance
(the R-score expected without the truth), ESS min / median, and the Monte Carlo error from the
two halves of the bank.

    python benchmarks/bench_posterior.py                    # 200 and 2,000 windows
    python benchmarks/bench_posterior.py --sizes 200 --members 500
    python benchmarks/bench_posterior.py --test-file /tmp/l63/l63_test.nc
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from fourdvarnet.posterior import build_index, make_bank, observed_entries, posterior_mean


def windows(n: int, seed: int, stretch: int = 5000, window: int = 200, dtype=torch.float64):
    """``n`` observed L63 windows ``(x, y, mask)`` of shape ``(n, 3, window)``."""
    traj = make_bank("l63", 0.01, members=1, steps=stretch, window=window, spinup=20.0, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    start = torch.sort(torch.randint(0, stretch, (n,), generator=gen)).values
    x = torch.stack([traj[0, s : s + window] for s in start]).transpose(1, 2).contiguous()
    t = torch.arange(window)
    mask = torch.zeros_like(x)
    mask[:, 0, (t % 8 == 0) & (t >= 10) & (t < window - 10)] = 1.0
    y = (x + 2.0**0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype)) * mask
    return x.to(dtype), y.to(dtype), mask.to(dtype)


def load(path: str):
    from fourdvarnet.data import load_split

    split = load_split(path, dtype=torch.float64)
    return split.x, split.y, split.mask, float(split.attrs["noise_var"])


def report(name: str, x, out: dict, seconds: float) -> None:
    err = (out["mean"] - x).pow(2)
    ra = (out["mean_half_a"] - x).pow(2).mean()
    rb = (out["mean_half_b"] - x).pow(2).mean()
    per_window = err.mean(dim=(1, 2))
    se = per_window.std() / per_window.numel() ** 0.5
    print(
        f"{name}: {x.shape[0]} windows, posterior {seconds:.1f} s ({seconds / x.shape[0]:.3f} s a"
        f" window)\n"
        f"  R-score {err.mean():.4f} +- {se:.4f} (x1 {err[:, 0].mean():.4f}, x2"
        f" {err[:, 1].mean():.4f}, x3 {err[:, 2].mean():.4f})\n"
        f"  mean posterior variance {out['var'].mean():.4f}\n"
        f"  ESS min {out['ess'].min():.0f}, median {out['ess'].median():.0f}; kept candidates"
        f" median {out['n_kept'].median():.0f}\n"
        f"  MC error: halves' R-scores {ra:.4f} / {rb:.4f} (diff {abs(ra - rb):.4f}); mean"
        f" (mean_a - mean_b)^2 / 4 = {out['mc_mse'].mean():.2e}\n"
        f"  truncation bound (weight left out / kept) max {out['trunc_bound'].max():.1e}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--trunc", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--test-file", default=None, help="a NetCDF test split instead")
    ap.add_argument("--brute-check", type=int, default=0, help="also brute-force N windows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    t0 = time.perf_counter()
    bank = make_bank(
        "l63", 0.01, args.members, args.steps, 200, spinup=10.0, seed=0, device=args.device,
        dtype=dtype,
    )  # fmt: skip
    t_bank = time.perf_counter() - t0
    print(
        f"bank: {args.members} x {args.steps} starts ({tuple(bank.shape)}, {args.dtype}, "
        f"{bank.numel() * bank.element_size() / 2**20:.0f} MB) in {t_bank:.1f} s",
        flush=True,
    )
    sets = []
    if args.test_file:
        x, y, mask, noise = load(args.test_file)
        sets.append((args.test_file, x, y, mask, noise))
    else:
        for i, n in enumerate(args.sizes):
            sets.append((f"set {n}", *windows(n, seed=1000 + i), 2.0))
    index = None
    for name, x, y, mask, noise in sets:
        x, y, mask = x.to(args.device), y.to(args.device), mask.to(args.device)
        if index is None:
            t0 = time.perf_counter()
            index = build_index(bank, 200, *observed_entries(mask))
            t_index = time.perf_counter() - t0
            print(
                f"index: {index.n_cells} cells of side {index.cell_size:.3f}, "
                f"{index.keys.shape[1]} observed entries, built in {t_index:.1f} s",
                flush=True,
            )
        t0 = time.perf_counter()
        out = posterior_mean(y, mask, bank, noise, trunc=args.trunc, index=index)
        report(name, x, out, time.perf_counter() - t0)
        if args.brute_check:
            k = args.brute_check
            t0 = time.perf_counter()
            ref = posterior_mean(y[:k], mask[:k], bank, noise, brute_force=True)
            dt = time.perf_counter() - t0
            diff = (ref["mean"] - out["mean"][:k]).abs().max()
            print(f"  brute force on {k} windows: {dt:.1f} s, max |mean diff| {diff:.2e}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory (max RSS) {peak:.1f} GB")


if __name__ == "__main__":
    main()
