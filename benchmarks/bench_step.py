"""Benchmark: eager PyTorch against the fast path, in one process.

On CUDA (the fast path: CUDA graphs), for each system x prior x solver at the paper's batch sizes
it times
  * one supervised training step (solver unroll with double backward, optimiser step), and
  * one solve of the test set (20 solver iterations, no training graph),
eagerly and on the fast path, and prints both times, their ratio and the peak GPU memory.
It also checks that both paths give the same loss and the same parameter gradients.

On the CPU, which has no fast path (docs/performance.md), it times the eager step and solve
only, at the paper's CPU batch sizes (L63 128, L96 16).

    python benchmarks/bench_step.py                 # CUDA if available, else CPU
    python benchmarks/bench_step.py --device cpu --reps 5 --n-iter 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fourdvarnet.config import DataConfig, Experiment, GennConfig, ModelConfig, ObsConfig
from fourdvarnet.data import Normalizer, Split, make_splits
from fourdvarnet.fast import FastSolve, GraphedTrainStep, graphs_available
from fourdvarnet.model import build_model
from fourdvarnet.training import training_loss

BATCH = {"l63": 128, "l96": 32}
CPU_BATCH = {"l63": 128, "l96": 16}  # the paper's (config.yaml train.<system>.batch_size)
TEST = {"l63": 2000, "l96": 256}
GENN = {
    "l63": GennConfig(width=60, hidden=30, kernel=11, pool=4, head=False),
    "l96": GennConfig(width=50, hidden=50, kernel=11, pool=4, head=True),
}


def make_data(system: str, n: int, device) -> tuple[Split, Normalizer]:
    if system == "l63":
        cfg = DataConfig(
            system="l63",
            n_steps=3000,
            n_train=n,
            n_val=1,
            n_test=1,
            train_range=[0, 2000],
            val_range=[2000, 2500],
            test_range=[2500, 3000],
            obs=ObsConfig(every=8, components=[0], blank_ends=10),
        )
    else:
        cfg = DataConfig(
            system="l96",
            dt=0.05,
            x0=[8.0] * 40,
            perturb=[20, 0.01],
            n_steps=1500,
            n_train=n,
            n_val=1,
            n_test=1,
            train_range=[0, 1000],
            val_range=[1000, 1250],
            test_range=[1250, 1500],
            obs=ObsConfig(every=4, n_random=20),
        )
    ds = make_splits(cfg)["train"]
    split = Split(
        *(
            torch.as_tensor(v.transpose(0, 2, 1).copy(), dtype=torch.float32)
            for v in (ds.x.values, ds.y.fillna(0).values, ds.mask.values)
        ),
        dict(ds.attrs),
    )
    norm = Normalizer.from_attrs(split.attrs)
    return norm.encode(split).to(device), norm


def timed(fn, reps: int, device) -> float:
    """Median wall time of ``fn()`` in seconds, synchronising the device around each call."""
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def eager_step(loss_fn, opt, b: Split) -> torch.Tensor:
    """One eager training step on the batch ``b``; returns the loss."""
    loss = loss_fn(b.x, b.y, b.mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def fresh(system, prior, solver, norm, device, seed=0):
    torch.manual_seed(seed)
    exp = Experiment(system, "supervised", prior, solver)
    model = build_model(
        exp,
        0.01 if system == "l63" else 0.05,
        norm,
        torch.zeros(3 if system == "l63" else 40),
        ModelConfig(genn=GENN[system]),
        learn_lambdas=True,
    )
    return model.to(device), exp


def bench(system, prior, solver, data, test, norm, device, reps, n_iter, batch=None):
    fast = graphs_available(device)
    out = {}
    b = data.subset(torch.arange(batch or BATCH[system]))

    def make(capturable):
        model, exp = fresh(system, prior, solver, norm, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)

        def loss_fn(x, y, mask):
            x_hat = model(y, mask, n_iter)
            return training_loss(model, "supervised", x_hat, x, y, mask, 0.05)

        return model, opt, loss_fn

    model, opt, loss_fn = make(False)
    loss_e = eager_step(loss_fn, opt, b).item()
    grads_e = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out["train_eager"] = timed(lambda: eager_step(loss_fn, opt, b), reps, device)
    if device.type == "cuda":
        out["mem_eager"] = torch.cuda.max_memory_allocated() / 2**20
    if fast:
        model_f, opt_f, loss_fn_f = make(True)
        torch.cuda.reset_peak_memory_stats()
        step = GraphedTrainStep(loss_fn_f, opt_f, (b.x, b.y, b.mask))
        loss_f = step(b.x, b.y, b.mask).item()
        grads_f = [p.grad.clone() for p in model_f.parameters() if p.grad is not None]
        rel = max(
            float((gf - ge).norm() / (ge.norm() + 1e-30))
            for gf, ge in zip(grads_f, grads_e, strict=True)
        )
        out["check"] = (abs(loss_f - loss_e) / abs(loss_e), rel)
        out["train_fast"] = timed(lambda: step(b.x, b.y, b.mask), reps, device)
        out["mem_fast"] = torch.cuda.max_memory_allocated() / 2**20

    model.eval()
    with torch.no_grad():
        out["solve_eager"] = timed(lambda: model(test.y, test.mask, 20), max(2, reps // 5), device)
        if fast:
            solve = FastSolve(model)
            solve(test.y, test.mask, 20)  # capture
            out["solve_fast"] = timed(
                lambda: solve(test.y, test.mask, 20), max(2, reps // 5), device
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--n-iter", type=int, default=20, help="solver iterations of the train step")
    ap.add_argument("--systems", nargs="+", default=["l63", "l96"])
    ap.add_argument("--priors", nargs="+", default=["rk4", "genn"])
    ap.add_argument("--solvers", nargs="+", default=["conv", "lstm"])
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = BATCH if graphs_available(device) else CPU_BATCH
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (eager only)"
    print(
        f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"train step with {args.n_iter} solver iterations, test solve with 20"
    )
    head = (
        f"{'system':6} {'prior':5} {'solver':6} {'batch':>5} {'train eager':>12} "
        f"{'train fast':>11} {'ratio':>6} {'solve eager':>12} {'solve fast':>11} "
        f"{'ratio':>6} {'mem MiB e/f':>12} {'check loss/grad':>16}"
    )
    print(head)
    for system in args.systems:
        batch = sizes[system]
        data, norm = make_data(system, batch, device)
        test = Split(
            *(
                t.repeat(TEST[system] // batch + 1, 1, 1)[: TEST[system]]
                for t in (data.x, data.y, data.mask)
            ),
            data.attrs,
        )
        for prior in args.priors:
            for solver in args.solvers:
                r = bench(
                    system, prior, solver, data, test, norm, device, args.reps, args.n_iter, batch
                )
                tf, sf = r.get("train_fast"), r.get("solve_fast")
                fmt = lambda v: f"{v * 1e3:9.1f} ms" if v else "        -  "  # noqa: E731
                ratio = lambda a, b: f"{a / b:5.1f}x" if b else "    - "  # noqa: E731
                mem = (
                    f"{r['mem_eager']:5.0f}/{r.get('mem_fast', 0):<5.0f}"
                    if "mem_eager" in r
                    else "-"
                )
                chk = "{:.0e}/{:.0e}".format(*r["check"]) if "check" in r else "-"
                print(
                    f"{system:6} {prior:5} {solver:6} {batch:5d} "
                    f"{fmt(r['train_eager']):>12} {fmt(tf):>11} {ratio(r['train_eager'], tf)} "
                    f"{fmt(r['solve_eager']):>12} {fmt(sf):>11} {ratio(r['solve_eager'], sf)} "
                    f"{mem:>12} {chk:>16}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
