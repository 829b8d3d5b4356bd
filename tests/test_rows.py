"""The row-kind registry: every row the config schema allows has exactly one kind, every other
combination is refused, and each kind builds, trains and scores as it says."""

import functools
import itertools
import re

import pytest
import torch
import yaml

from fourdvarnet.config import (
    PRIORS,
    SCHEMES,
    SOLVERS,
    ConfigError,
    EnksConfig,
    EvalConfig,
    Experiment,
    LbfgsConfig,
    TrainConfig,
    from_dict,
)
from fourdvarnet.data import Normalizer, load_split
from fourdvarnet.model import build_model
from fourdvarnet.pipeline import load_normalised
from fourdvarnet.rows import KINDS, Inputs, kind_of, learns_prior, pretrains_prior

SCHEMA = "workflow/schemas/config.schema.yaml"


@functools.cache
def _row_pattern() -> re.Pattern:
    schema = yaml.safe_load(open(SCHEMA))
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "pattern" in node and "direct" in node["pattern"]:
                found.append(node["pattern"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert len(set(found)) == 1, found
    return re.compile(found[0])


ALL = list(itertools.product(SCHEMES, PRIORS, SOLVERS))


@pytest.mark.parametrize("scheme,prior,solver", ALL)
def test_the_registry_holds_exactly_the_rows_the_schema_allows(scheme, prior, solver):
    row = f"{scheme}-{prior}-{solver}"
    allowed = bool(_row_pattern().match(row))
    exp = Experiment("l63", scheme, prior, solver)
    if allowed:
        kind = kind_of(exp)
        assert kind is KINDS[solver]
        assert kind.trained == (scheme != "none")
    else:
        with pytest.raises(ConfigError, match=solver):
            kind_of(exp)


def test_an_unknown_row_kind_is_refused():
    with pytest.raises(ConfigError, match="solver"):
        kind_of(Experiment("l63", "none", "rk4", "adam"))


@pytest.mark.parametrize(
    "row",
    [
        "none-rk4-fsgd",
        "none-rk4-lbfgs",
        "none-rk4-enks",
        "unsupervised-rk4-conv",
        "supervised-genn-lstm",
        "supervised-none-direct",
    ],
)
def test_each_kind_builds_a_model_that_reconstructs(row, l63_files):
    test, norm, fill = load_normalised(l63_files["test"])
    exp = Experiment("l63", *row.split("-"))
    model = build_model(
        exp, float(test.attrs["dt"]), norm, fill, None, (0.01, 1.0), evaluate=EvalConfig(),
        attrs=test.attrs, train_x=load_split(l63_files["train"]).x,
    )  # fmt: skip
    b = test.subset(torch.arange(4))
    n_iter, _ = kind_of(exp).budget(exp, EvalConfig())
    with torch.no_grad():
        x_hat = model(b.y, b.mask, min(n_iter, 3))
    assert x_hat.shape == b.x.shape and torch.isfinite(x_hat).all()
    assert (model.prior is not None) and kind_of(exp).uses_prior == (exp.prior != "none")


def test_what_learns_follows_the_scheme_and_the_prior():
    cfg = TrainConfig()
    assert learns_prior(Experiment("l63", "supervised", "genn", "conv"), cfg)
    assert not learns_prior(Experiment("l63", "unsupervised", "genn", "conv"), cfg)
    assert learns_prior(Experiment("l63", "supervised", "rk4", "conv"), TrainConfig(learn_ode=True))
    assert not learns_prior(
        Experiment("l63", "supervised", "rk4", "conv"), TrainConfig(learn_ode=False)
    )
    assert pretrains_prior(Experiment("l63", "unsupervised", "genn", "lstm"))
    assert not pretrains_prior(Experiment("l63", "none", "genn", "fsgd"))  # untrained: no fit


def test_the_baselines_that_read_the_data_say_so():
    exp = Experiment("l63", "none", "rk4", "enks")
    with pytest.raises(ValueError, match="needs the evaluate settings"):
        KINDS["enks"].solver(exp, Inputs(0.01, Normalizer(0.0, 1.0), None))


def test_the_lbfgs_row_takes_its_memory_from_the_evaluation_settings():
    exp = Experiment("l63", "none", "rk4", "lbfgs")
    lbfgs = LbfgsConfig(history=7, tolerance_grad=1e-4, tolerance_change=1e-8)
    inputs = Inputs(0.01, Normalizer(0.0, 1.0), None, evaluate=EvalConfig(lbfgs=lbfgs))
    solver = KINDS["lbfgs"].solver(exp, inputs)
    assert (solver.history, solver.tolerance_grad, solver.tolerance_change) == (7, 1e-4, 1e-8)
    default = KINDS["lbfgs"].solver(exp, Inputs(0.01, Normalizer(0.0, 1.0), None))
    assert (default.history, default.tolerance_grad, default.tolerance_change) == (20, 0.0, 0.0)


def test_the_lbfgs_row_solves_its_own_weights_and_the_other_baselines_fsgds(
    l63_files, small, tmp_path
):
    """``evaluate.<system>.lbfgs.lambdas`` is the cost of the L-BFGS row (as evaluated, in the
    file's ``cost_lambdas``); FSGD and the fixed point keep ``fsgd.lambdas``."""
    import json

    import xarray as xr

    from fourdvarnet import pipeline

    ecfg = {**small.eval, "lbfgs": {"n_iter": 2, "lambdas": [0.0625, 4.0]}}
    ecfg["fsgd"] = {**ecfg["fsgd"], "n_iter": 2, "lambdas": [0.25, 1.0]}
    got = {}
    for row in ("none-rk4-lbfgs", "none-rk4-fsgd", "none-rk4-fixed_point"):
        out = tmp_path / f"{row}.nc"
        pipeline.evaluate_row(
            row, "l63", 0, l63_files["val"], small.model, ecfg, out, tmp_path / f"{row}.json"
        )
        got[row] = json.loads(xr.load_dataset(out).attrs["cost_lambdas"])
    assert got == {
        "none-rk4-lbfgs": [0.0625, 4.0],  # exact in float32 square roots
        "none-rk4-fsgd": [0.25, 1.0],
        "none-rk4-fixed_point": [0.25, 1.0],
    }
    # without its own key, the row takes the code default (config.yaml's), not FSGD's
    default = {**small.eval, "lbfgs": {"n_iter": 2}}
    out = tmp_path / "default.nc"
    pipeline.evaluate_row(
        "none-rk4-lbfgs", "l63", 0, l63_files["val"], small.model, default, out, tmp_path / "d.json"
    )
    assert json.loads(xr.load_dataset(out).attrs["cost_lambdas"]) == pytest.approx([0.01, 100.0])


def test_the_lbfgs_weights_and_tolerances_are_checked():
    from fourdvarnet.config import from_dict

    for bad, key in (({"lambdas": [0.0, 0.0]}, "lambdas"), ({"tolerance_change": "1e-9"}, "tol")):
        with pytest.raises(ConfigError, match=f"evaluate.l63.lbfgs.{key}"):
            from_dict(EvalConfig, {"lbfgs": bad}, "evaluate.l63")


def test_the_enks_from_training_states_reads_the_training_truth():
    exp = Experiment("l63", "none", "rk4", "enks")
    attrs = {
        "train_component_mean": [0.0, 0.0, 20.0],
        "train_component_cov": [60.0, 0, 0, 0, 80.0, 0, 0, 0, 70.0],
        "noise_var": 2.0,
    }
    states = EvalConfig(enks=EnksConfig(init="states"))
    train_x = torch.randn(4, 3, 10)
    inputs = functools.partial(Inputs, 0.01, Normalizer(0.0, 1.0), None, attrs=attrs)
    with pytest.raises(ValueError, match="needs the train_x settings"):
        KINDS["enks"].solver(exp, inputs(evaluate=states))
    solver = KINDS["enks"].solver(exp, inputs(evaluate=states, train_x=train_x))
    assert torch.equal(solver.states, train_x)
    # the Gaussian init ignores the training truth
    gaussian = EvalConfig(enks=EnksConfig(init="gaussian"))
    gaussian = KINDS["enks"].solver(exp, inputs(evaluate=gaussian, train_x=train_x))
    assert gaussian.states is None
    with pytest.raises(ConfigError, match="init"):
        from_dict(EvalConfig, {"enks": {"init": "uniform"}}, "evaluate.l63")
