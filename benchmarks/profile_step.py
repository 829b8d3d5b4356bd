"""Profile one supervised training step: the CUDA kernels (or CPU ops) that take the time.

python benchmarks/profile_step.py --system l63 --prior genn --solver conv [--cudnn-benchmark]
"""

from __future__ import annotations

import argparse

import torch
from bench_step import BATCH, fresh, make_data, timed

from fourdvarnet.training import training_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="l63")
    ap.add_argument("--prior", default="genn")
    ap.add_argument("--solver", default="conv")
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--cudnn-benchmark", action="store_true")
    ap.add_argument("--rows", type=int, default=15)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data, norm = make_data(args.system, BATCH[args.system], device)
    model, _ = fresh(args.system, args.prior, args.solver, norm, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x_hat = model(data.y, data.mask, args.n_iter)
        loss = training_loss(model, "supervised", x_hat, data.x, data.y, data.mask, 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    print(
        f"{args.system} {args.prior} {args.solver} cudnn.benchmark={args.cudnn_benchmark}: "
        f"step {timed(step, 5, device) * 1e3:.1f} ms"
    )
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
