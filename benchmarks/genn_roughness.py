"""Where a trained GENN row's roughness comes from: its prior's two branches, or its solver.

For each checkpoint, on the *validation* split: the roughness (mean squared second difference in
time over the truth's) of the prior applied to the true trajectories, ``Phi(x)``, of its two
branches apart (``GENN.branches``, whose sum is ``Phi(x)``), of the reconstruction ``x_hat``
after the test's solver iterations, and its R-score. One line each.

    python benchmarks/genn_roughness.py --data results/quick/data/l63_val.nc \\
        results/quick/models/l63/supervised-genn-conv/seed*.pt
"""

from __future__ import annotations

import argparse

import torch

from fourdvarnet.metrics import second_difference
from fourdvarnet.model import load_checkpoint
from fourdvarnet.pipeline import load_normalised
from fourdvarnet.priors import GENN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", required=True, help="the validation split's NetCDF file")
    ap.add_argument("--n-iter", type=int, default=20)
    args = ap.parse_args()

    split, norm, _ = load_normalised(args.data)
    x, y, mask = split.x, split.y, split.mask
    truth = second_difference(x).pow(2).mean()

    def rough(a: torch.Tensor) -> float:
        return float(second_difference(a).pow(2).mean() / truth)

    for path in args.checkpoints:
        model, _ = load_checkpoint(path)
        model.eval()
        phi = model.prior
        if not isinstance(phi, GENN):
            raise SystemExit(f"{path}: not a GENN row")
        with torch.no_grad():
            coarse, fine = phi.branches(x)
        x_hat = model(y, mask, args.n_iter).detach()
        r_score = float(((x_hat - x) * norm.std).pow(2).mean())
        print(
            f"{path}: Phi(x) {rough(coarse + fine):.1f}, coarse branch {rough(coarse):.1f}, "
            f"fine branch {rough(fine):.1f}, x_hat {rough(x_hat):.1f}, R-score {r_score:.2f}"
        )


if __name__ == "__main__":
    main()
