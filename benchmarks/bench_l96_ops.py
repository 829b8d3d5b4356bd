"""Benchmark: exact rewrites of the L96 operations that dominate a training step, against the
package's own.

The L96 step spends its time in the solvers' 3x3 convolutions over the (component, time) image
(periodic along components) and in the RK4 prior's stencil of rolled copies
(``benchmarks/profile_step.py --system l96``). Each candidate below computes the same numbers
(the maximum difference is printed) in another way; the script times each one inside the pattern
of a training step (forward, gradient with ``create_graph``, backward through it: the double
backward of the unrolled solver) and prints its speed-up over the package's version, in one
process, one thread:

* convolutions: ``channels-last`` memory format; ``circular`` (``F.pad`` circular along
  components, zeros in time by the convolution's own padding, no concatenation); ``fold`` (the
  three component offsets stacked as channels, components folded into the batch, a 1-D
  convolution over time); ``unfold`` (im2col and one matrix product);
* the L96 tendency: ``slices`` (one periodic padding, then views instead of rolled copies);
  ``unfold-matmul`` (the stencils as matrix products over an unfolded view).

    python benchmarks/bench_l96_ops.py --reps 5
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fourdvarnet.layers import Conv
from fourdvarnet.priors import ODEPrior

BATCH, N_COMP, N_TIME = 16, 40, 200  # the L96 CPU batch of a training step


def ring(h, p: int, dim: int = -2):
    """``h`` padded periodically by ``p`` along the component axis ``dim``."""
    return torch.cat([h.narrow(dim, h.shape[dim] - p, p), h, h.narrow(dim, 0, p)], dim=dim)


def conv_circular(h, w):
    return F.conv2d(F.pad(h, (0, 0, 1, 1), mode="circular"), w, padding=(0, 1))


def conv_channels_last(h, w):
    h = F.pad(ring(h, 1), (1, 1, 0, 0))
    cl = torch.channels_last
    return F.conv2d(h.contiguous(memory_format=cl), w.contiguous(memory_format=cl))


def conv_fold(h, w):
    b, c, n, t = h.shape
    hp = ring(h, 1)
    rows = torch.stack([hp[:, :, k : k + n] for k in range(3)], dim=2)  # (B, C, 3, N, T)
    rows = rows.permute(0, 3, 1, 2, 4).reshape(b * n, c * 3, t)
    out = F.conv1d(rows, w.reshape(w.shape[0], c * 3, 3), padding=1)
    return out.reshape(b, n, -1, t).permute(0, 2, 1, 3)


def conv_unfold(h, w):
    b, _, n, t = h.shape
    hp = F.pad(ring(h, 1), (1, 1, 0, 0))
    return (w.reshape(w.shape[0], -1) @ F.unfold(hp, 3)).reshape(b, -1, n, t)


def tendency_slices(prior, X):
    n = X.shape[1]
    Xp = ring(X, 2, dim=1)
    a = sum(w * Xp[:, k : k + n] for k, w in enumerate(prior.stencil_a))
    b = sum(w * Xp[:, k + 1 : k + 1 + n] for k, w in enumerate(prior.stencil_b))
    return a * b - X + prior.forcing


def tendency_unfold(prior, X):
    win = ring(X, 2, dim=1).unfold(1, 5, 1)  # (B, N, T, 5)
    return (win @ prior.stencil_a) * (win[..., 1:4] @ prior.stencil_b) - X + prior.forcing


def step_seconds(fn, x, reps: int) -> float:
    """Forward, gradient with a graph, backward through it: seconds per call."""

    def step():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((torch.tanh(fn(xx)) ** 2).sum(), xx, create_graph=True)
        g.pow(2).sum().backward()

    step()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - start) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    candidates = {
        "channels-last": conv_channels_last,
        "circular": conv_circular,
        "fold": conv_fold,
        "unfold": conv_unfold,
    }
    # the aG-Conv solver's three convolutions and the aG-LSTM gates (1 + 5 -> 20 channels)
    for cin, cout in [(2, 8), (8, 16), (16, 1), (6, 20)]:
        conv = Conv(2, cin, cout, 3)
        x = torch.randn(BATCH, cin, N_COMP, N_TIME)
        ref = step_seconds(conv, x, args.reps)
        cells = []
        for name, fn in candidates.items():
            err = (fn(x, conv.weight) - conv(x)).abs().max().item()
            ratio = ref / step_seconds(lambda h, fn=fn, w=conv.weight: fn(h, w), x, args.reps)
            cells.append(f"{name} {ratio:.2f}x (diff {err:.0e})")
        print(f"conv {cin:>2} -> {cout:>2}: package {ref * 1e3:6.1f} ms; " + "; ".join(cells))
    prior = ODEPrior("l96", 0.05)
    X = 3 * torch.randn(BATCH, N_COMP, N_TIME)
    ref = step_seconds(prior.tendency, X, args.reps)
    cells = []
    for name, fn in {"slices": tendency_slices, "unfold-matmul": tendency_unfold}.items():
        err = (fn(prior, X) - prior.tendency(X)).abs().max().item()
        ratio = ref / step_seconds(lambda z, fn=fn: fn(prior, z), X, args.reps)
        cells.append(f"{name} {ratio:.2f}x (diff {err:.0e})")
    print(f"L96 tendency: package {ref * 1e3:6.1f} ms; " + "; ".join(cells))


if __name__ == "__main__":
    main()
