"""The direct row x_hat = CNN(y, Omega): a U-Net of the window's length, periodic along the L96
ring, of GENN's size, that learns from the truth."""

from pathlib import Path

import pytest
import torch
import yaml

from fourdvarnet.config import DirectConfig, GennConfig
from fourdvarnet.direct import DirectSolver, UNet, n_parameters
from fourdvarnet.priors import GENN, LAYOUT

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("system", ["l63", "l96"])
@pytest.mark.parametrize("length", [200, 64, 199, 37, 5, 1])
def test_output_has_the_window_length(system, length):
    # levels=2 pools time by 4: 200 and 64 are multiples of 4, the others not
    torch.manual_seed(0)
    dims, channels = LAYOUT[system]
    n_comp = 3 if system == "l63" else 40
    solver = DirectSolver(dims, channels, DirectConfig(width=4, levels=2, kernel=3))
    y = torch.randn(2, n_comp, length)
    mask = (torch.rand(2, n_comp, length) < 0.5).float()
    calls = []
    x_hat = solver(None, None, y, mask, 20, callback=lambda k, x: calls.append(k))
    assert x_hat.shape == y.shape and torch.isfinite(x_hat).all()
    assert calls == [1]  # one pass, whatever n_iter


def test_unobserved_values_are_ignored():
    torch.manual_seed(0)
    solver = DirectSolver(1, 3, DirectConfig(width=4, levels=2, kernel=3))
    y = torch.randn(2, 3, 50)
    mask = (torch.rand(2, 3, 50) < 0.3).float()
    other = torch.where(mask > 0, y, torch.randn_like(y))  # only unobserved entries changed
    torch.testing.assert_close(solver(None, None, y, mask, 1), solver(None, None, other, mask, 1))


def test_l96_network_is_periodic_along_the_ring():
    # the convolutions wrap around the 40 components and never pool them: rotating the
    # observations rotates the reconstruction (the L96 dynamics are shift-equivariant too)
    torch.manual_seed(0)
    solver = DirectSolver(2, 1, DirectConfig(width=4, levels=2, kernel=5))
    y = torch.randn(2, 40, 24)
    mask = (torch.rand(2, 40, 24) < 0.5).float()
    shifted = solver(None, None, y.roll(7, dims=1), mask.roll(7, dims=1), 1)
    torch.testing.assert_close(shifted, solver(None, None, y, mask, 1).roll(7, dims=1))


def test_unet_skips_carry_full_resolution():
    # levels=0 is a plain CNN; each level adds a coarser scale with a skip connection
    plain = UNet(1, 6, 3, DirectConfig(width=8, levels=0, kernel=5))
    deep = UNet(1, 6, 3, DirectConfig(width=8, levels=2, kernel=5))
    assert len(deep.down) == len(deep.up) == len(deep.merge) == 2
    assert n_parameters(plain) < n_parameters(deep)


@pytest.mark.parametrize("system", ["l63", "l96"])
def test_parameter_count_is_of_the_order_of_genn(system):
    model = yaml.safe_load((REPO / "config.yaml").read_text())["model"][system]
    dims, channels = LAYOUT[system]
    genn = n_parameters(GENN(dims, channels, GennConfig(**model["genn"])))
    direct = n_parameters(DirectSolver(dims, channels, DirectConfig(**model["direct"])))
    assert 0.5 < direct / genn < 2, (direct, genn)


def test_adam_steps_lower_the_reconstruction_mse(l63_files, normalised):
    train, _, _ = normalised(l63_files["train"])
    b = train.subset(torch.arange(16))
    torch.manual_seed(0)
    solver = DirectSolver(1, 3, DirectConfig(width=8, levels=2, kernel=5))
    opt = torch.optim.Adam(solver.parameters(), lr=3e-3)

    def mse():
        return ((solver(None, None, b.y, b.mask, 1) - b.x) ** 2).mean()

    with torch.no_grad():
        before = float(mse())
    for _ in range(40):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(mse())
    assert after < 0.5 * before, (before, after)
