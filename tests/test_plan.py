"""The plan check: a preset's training cost, and the warning for long CPU training."""

from pathlib import Path

import pytest
import yaml

from fourdvarnet.config import resolve_preset
from fourdvarnet.plan import estimate_training, learned_jobs, mean_iterations, plan_warning

REPO = Path(__file__).resolve().parents[1]


def preset(name: str) -> dict:
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    return resolve_preset(dict(raw, preset=name))


def test_paper_preset_without_cuda_warns_with_the_estimate_and_the_alternatives():
    msg = plan_warning(preset("paper"), cuda_available=False, cores=8)
    assert msg is not None and msg.startswith("WARNING")
    assert "'paper' preset" in msg and "no CUDA device" in msg
    assert "days" in msg  # weeks of CPU training, said in days
    for alternative in ("--config preset=quick", "GPU", "--workflow-profile profiles/slurm"):
        assert alternative in msg


@pytest.mark.parametrize("name", ["quick", "ci"])
def test_small_presets_get_no_warning(name):
    assert plan_warning(preset(name), cuda_available=False) is None


def test_no_warning_with_cuda_or_without_training_jobs():
    cfg = preset("paper")
    assert plan_warning(cfg, cuda_available=True) is None
    assert plan_warning(cfg, cuda_available=False, jobs=[]) is None
    # Only the pending jobs count: one RK4 row of L63 is a few CPU-hours.
    one = plan_warning(cfg, cuda_available=False, jobs=[("l63", "supervised-rk4-conv")])
    assert one is not None and "1 job(s)" in one


RAMP = [
    {"epoch": 0, "n_iter": 5},
    {"epoch": 30, "n_iter": 10},
    {"epoch": 60, "n_iter": 15},
    {"epoch": 90, "n_iter": 20},
]


def test_estimate_reproduces_the_gpu_cost_table_of_the_performance_notes():
    """docs/performance.md: at 200 epochs, L63 10,000 windows at batch 128, L96 2,000 at 32,
    the 5 -> 20 ramp: 0.4 + 3.6 + 0.8 + 10.6 h of training on one GPU for one seed."""
    rows = ["supervised-rk4-conv", "supervised-rk4-lstm", "unsupervised-rk4-conv",
            "unsupervised-rk4-lstm"]  # fmt: skip
    cfg = {
        "preset": "paper",
        "seeds": [0],
        "experiments": {
            "l63": ["none-rk4-fsgd", *rows, *(r.replace("rk4", "genn") for r in rows)],
            "l96": [*rows, "supervised-genn-conv", "supervised-genn-lstm"],
        },
        "data": {"l63": {"n_train": 10000}, "l96": {"n_train": 2000}},
        "train": {
            "l63": {"epochs": 200, "batch_size": 128, "schedule": RAMP},
            "l96": {"epochs": 200, "batch_size": 32, "schedule": RAMP},
        },
    }
    est = estimate_training(cfg)
    assert est.jobs == len(learned_jobs(cfg)) == 14
    assert est.gpu_hours == pytest.approx(0.4 + 3.6 + 0.8 + 10.6, rel=0.05)
    assert est.cpu_hours > 24 * 7  # weeks on one core
    assert estimate_training(dict(cfg, seeds=[0, 1, 2])).jobs == 42


def test_mean_iterations_follows_the_schedule():
    assert mean_iterations({"epochs": 200, "schedule": RAMP}) == pytest.approx(15.5)
    assert mean_iterations({"epochs": 1, "schedule": RAMP}) == 5
