"""Benchmark: candidate speed levers for the GENN training step, one process, one table.

On the GPU the GENN rows are bound by kernel time, not launch overhead (docs/performance.md), so
the CUDA graph alone gains little there. This script times one
supervised training step (20 solver iterations, double backward, Adam) of each GENN row at the
paper's batch size under each lever, against the default, and checks that the loss and the
parameter gradients stay those of the default eager step:

* ``default``: the package as it is;
* ``cudnn-benchmark``: cuDNN autotunes its convolution algorithms;
* ``no-tf32``: TF32 off for cuDNN (shows whether tensor cores are in use at all);
* ``channels-last``: NHWC weights for the 2-D (Lorenz-96) model, prior and solver;
* ``matmul-1x1``: the 1x1 convolutions of the prior as batched matrix products;
* ``unfold``: the zero-centre convolution as unfold + matrix product;
* ``bf16``: the prior under bfloat16 autocast (gradients then differ by rounding, not a bug).

On CUDA the step is the fast path (``GraphedTrainStep``); on the CPU it is the eager step. The
levers live here, not in the package: one that pays off on the GPU moves into the package with a
test. A lever that fails (e.g. cannot be captured) prints its error and the table goes on.

    python benchmarks/bench_levers.py                      # CUDA if available, else CPU
    python benchmarks/bench_levers.py --systems l96 --levers default unfold --reps 5
"""

from __future__ import annotations

import argparse
import contextlib
import types

import torch
import torch.nn.functional as F
from bench_step import BATCH, eager_step, fresh, make_data, timed
from torch import nn

from fourdvarnet.fast import GraphedTrainStep, graphs_available
from fourdvarnet.layers import Conv
from fourdvarnet.training import training_loss

LEVERS = (
    "default",
    "cudnn-benchmark",
    "no-tf32",
    "channels-last",
    "matmul-1x1",
    "unfold",
    "bf16",
)


class MatmulPointwise(nn.Module):
    """A bias-free 1x1 convolution as ``W @ h`` over flattened positions (shares the weight)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.weight = conv.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(self.weight.shape[0], -1)
        return (w @ h.flatten(2)).reshape(h.shape[0], w.shape[0], *h.shape[2:])


def _unfold_forward(self: Conv, h: torch.Tensor) -> torch.Tensor:
    """``Conv.forward`` with the convolution as unfold + matrix product (same padding)."""
    p, w = self.pad, self.effective_weight()
    if self.dims == 1:
        cols = F.pad(h, (p, p)).unfold(-1, w.shape[-1], 1)  # B, C, T, k
        cols = cols.permute(0, 1, 3, 2).reshape(h.shape[0], -1, h.shape[-1])
    else:
        h2 = torch.cat([h[..., -p:, :], h, h[..., :p, :]], dim=-2)
        cols = F.unfold(F.pad(h2, (p, p, 0, 0)), w.shape[-2:])  # B, C*k*k, H*W
    out = w.reshape(w.shape[0], -1) @ cols
    return out.reshape(h.shape[0], w.shape[0], *h.shape[2:])


def _swap_pointwise(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv1d, nn.Conv2d)) and child.kernel_size == (1,) * (
            child.weight.dim() - 2
        ):
            if child.bias is not None:
                raise ValueError("matmul-1x1 supports bias-free 1x1 convolutions only")
            setattr(module, name, MatmulPointwise(child))
        else:
            _swap_pointwise(child)


def _bf16_prior(prior: nn.Module, device: torch.device) -> None:
    plain = prior.forward

    def forward(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            return plain(x).float()

    prior.forward = forward


@contextlib.contextmanager
def backend_flags(lever: str):
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.benchmark = lever == "cudnn-benchmark"
    if lever == "no-tf32":
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved


def apply_lever(lever: str, model: nn.Module, device: torch.device) -> None:
    prior = model.prior
    if lever == "channels-last":
        if not any(p.dim() == 4 for p in prior.parameters()):
            raise ValueError("channels-last applies to the 2-D (Lorenz-96) model only")
        model.to(memory_format=torch.channels_last)
    elif lever == "matmul-1x1":
        _swap_pointwise(prior)
    elif lever == "unfold":
        for m in prior.modules():
            if isinstance(m, Conv):
                m.forward = types.MethodType(_unfold_forward, m)
    elif lever == "bf16":
        _bf16_prior(prior, device)


def run_lever(system, solver, lever, batch, norm, device, reps, n_iter, reference):
    """Time one step under ``lever``; relative loss and gradient differences to ``reference``."""
    fast = graphs_available(device)
    with backend_flags(lever):
        model, _ = fresh(system, "genn", solver, norm, device)
        apply_lever(lever, model, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=fast)

        def loss_fn(x, y, mask):
            x_hat = model(y, mask, n_iter)
            return training_loss(model, "supervised", x_hat, x, y, mask, 0.05)

        if fast:
            step = GraphedTrainStep(loss_fn, opt, (batch.x, batch.y, batch.mask))
            run = lambda: step(batch.x, batch.y, batch.mask)  # noqa: E731
        else:
            run = lambda: eager_step(loss_fn, opt, batch)  # noqa: E731

        loss = run().item()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        run()  # one more warm-up step before timing
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = timed(run, reps, device)
        mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    loss0, grads0 = reference
    rel = max(
        float((g - g0).norm() / (g0.norm() + 1e-30)) for g, g0 in zip(grads, grads0, strict=True)
    )
    return t, mem, (abs(loss - loss0) / abs(loss0), rel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--batch", type=int, help="batch size (default: the paper's)")
    ap.add_argument("--systems", nargs="+", default=["l63", "l96"])
    ap.add_argument("--solvers", nargs="+", default=["conv"])
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    path = "fast path (CUDA graph)" if graphs_available(device) else "eager"
    print(f"device {name}, torch {torch.__version__}, {path}, {args.n_iter} solver iterations")
    print(
        f"{'system':6} {'solver':6} {'batch':>5} {'lever':16} {'step':>10} {'vs default':>10} "
        f"{'peak MiB':>9} {'loss/grad rel. diff.':>21}"
    )
    for system in args.systems:
        n = args.batch or BATCH[system]
        batch, norm = make_data(system, n, device)
        for solver in args.solvers:
            # The reference: the default eager step (the package's CPU path and ground truth).
            ref_model, _ = fresh(system, "genn", solver, norm, device)
            x_hat = ref_model(batch.y, batch.mask, args.n_iter)
            ref_loss = training_loss(
                ref_model, "supervised", x_hat, batch.x, batch.y, batch.mask, 0.05
            )
            ref_loss.backward()
            reference = (ref_loss.item(), [p.grad.clone() for p in ref_model.parameters()])
            base = None
            for lever in args.levers:
                try:
                    t, mem, chk = run_lever(
                        system, solver, lever, batch, norm, device, args.reps, args.n_iter,
                        reference,
                    )  # fmt: skip
                except Exception as err:  # a lever that does not apply or cannot be captured
                    print(f"{system:6} {solver:6} {n:5d} {lever:16} failed: {err}", flush=True)
                    continue
                base = t if lever == "default" else base
                ratio = f"{base / t:9.2f}x" if base else f"{'-':>10}"
                print(
                    f"{system:6} {solver:6} {n:5d} {lever:16} {t * 1e3:7.1f} ms {ratio} "
                    f"{mem:9.0f} {chk[0]:10.0e}/{chk[1]:.0e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
