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


def test_the_plan_prices_with_the_step_lines_of_the_timings_file():
    """CPU_STEP and GPU_STEP come from step_timings.csv: one step measurement per device, system
    and prior kind, the middle of its range, with the batch and iterations it was measured at."""
    from fourdvarnet import plan, step_timings

    timings = step_timings.load()
    assert {(t.device, t.measure) for t in timings} >= {("cpu", "step"), ("gpu", "step")}
    for t in timings:
        assert t.measured_on and t.setup and t.how and t.commit, t  # every line says its source
    keys = {(s, p) for s in ("l63", "l96") for p in ("ode", "genn")}
    assert set(plan.CPU_STEP) == set(plan.GPU_STEP) == keys
    # the values the plan held as constants before the file (GPU: now the exact middles)
    assert plan.CPU_STEP[("l63", "ode")] == pytest.approx((0.063, 32, 5))
    assert plan.CPU_STEP[("l96", "genn")] == pytest.approx((11.15, 16, 5))
    assert plan.GPU_STEP[("l63", "ode")] == pytest.approx((0.0254, 128, 20), rel=0.01)
    assert plan.GPU_STEP[("l96", "genn")] == pytest.approx((1.95, 32, 20), rel=0.01)


def test_a_bad_timings_file_is_refused_with_its_line(tmp_path):
    from fourdvarnet import step_timings

    good = step_timings.read_text().splitlines()
    bad = tmp_path / "t.csv"
    assert good[1].startswith("cpu,")
    bad.write_text(f"{good[0]}\ntpu{good[1][3:]}\n")
    with pytest.raises(ValueError, match="line 2: device = 'tpu'"):
        step_timings.load(bad)
    twice = step_timings.load() + step_timings.load()
    with pytest.raises(ValueError, match="two step measurements"):
        step_timings.step_table("cpu", twice)


def test_performance_doc_shows_the_timings_file():
    """docs/performance.md's step-timings table is generated from the file (never edited)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "performance_tables", REPO / "scripts" / "performance_tables.py"
    )
    pt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pt)
    text = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    (block,) = pt.blocks(text)
    assert block.csv == "src/fourdvarnet/step_timings.csv"
    assert block.content == pt.body(REPO / block.csv), (
        "docs/performance.md's step timings differ from src/fourdvarnet/step_timings.csv: run "
        "`python scripts/performance_tables.py`"
    )
    assert "| cpu | l96 | genn | step | 16 | 5 | 10.9-11.4 s |" in block.content


def reference_run(name: str) -> tuple[dict, float]:
    """A reference run's resolved config (reference/<name>/config.yaml, the config.yaml of its
    commit, with the preset its run-info.txt names applied) and its measured wall seconds."""
    import re

    info = (REPO / "reference" / name / "run-info.txt").read_text(encoding="utf-8")
    head = re.match(r"preset: (\w+)\s.*?\bwall (\d+) s", info)
    assert head, f"reference/{name}/run-info.txt: no 'preset: ... wall N s' first line"
    raw = yaml.safe_load((REPO / "reference" / name / "config.yaml").read_text())
    return resolve_preset(dict(raw, preset=head[1])), float(head[2])


@pytest.mark.parametrize("name", ["quick", "cpu"])
def test_the_run_estimate_is_within_2x_of_the_reference_runs(name):
    """Every job of the preset (simulations, pre-training, training, evaluations, tables and
    figures) on the reference runs' 2 cores, against their measured wall time."""
    from fourdvarnet.plan import estimate_run

    cfg, measured = reference_run(name)
    est = estimate_run(cfg, cores=2)
    assert measured / 2 <= est.wall_hours * 3600 <= measured * 2, (est, measured)


def test_a_narrow_genn_is_priced_by_its_compute():
    """The quick preset's L96 GENN (width 16, hidden 16, kernel 5) costs about a tenth of the
    paper's (50, 50, 11) it was timed with; the L63 GENN of the config is about the timed one."""
    from fourdvarnet.plan import genn_scale

    quick = preset("quick")
    assert 0.05 < genn_scale(quick, "l96") < 0.15
    assert 0.8 < genn_scale(preset("paper"), "l63") < 1.2
    assert genn_scale({}, "l96") == 1.0


def test_paper_preset_without_cuda_stops_when_unnamed_with_the_run_estimate():
    from fourdvarnet.plan import estimate_run, plan_line, unnamed_preset_stop

    cfg = preset("paper")
    stop = unnamed_preset_stop(cfg, cuda_available=False, cores=8)
    assert stop is not None and stop.startswith("STOPPED before any job")
    assert "of wall time on 8 core(s)" in stop and "--config preset=quick" in stop
    assert unnamed_preset_stop(cfg, cuda_available=True) is None
    assert unnamed_preset_stop(preset("quick"), cuda_available=False) is None
    # the dry run's line: every job of the preset, its training jobs counted
    assert plan_line(cfg, 8).startswith("preset 'paper': 16 training job(s), about ")
    assert "for every output of the preset" in plan_line(cfg, 8)
    # the pending jobs only: fewer jobs, less time
    l63 = [("train", {"system": "l63", "row": r, "seed": "0"}) for r in ("supervised-rk4-conv",)]
    assert estimate_run(cfg, l63, 8).wall_hours < estimate_run(cfg, cores=8).wall_hours
