"""Shared pytest fixtures."""

import os

import pytest


def pytest_configure(config):
    """Run torch on one CPU thread unless FOURDVARNET_TEST_THREADS says otherwise.

    The unit tests work on tiny tensors, where OpenMP threads only add overhead, and on a busy
    machine (a workflow running beside the tests) their spin-waits slow the suite down tenfold.
    """
    import torch

    torch.set_num_threads(int(os.environ.get("FOURDVARNET_TEST_THREADS", "1")))


@pytest.fixture
def keep_logging():
    """The CLI and ``job_log`` reconfigure the root logger: put pytest's handlers back after."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node SLURM cluster on localhost for the whole session (see slurm_cluster.py).

    Opt-in: as root it rewrites /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd
    (all restored afterwards), so it starts only with RUN_SLURM_TESTS=1 or REQUIRE_SLURM=1 (CI)
    and skips otherwise. Skips when it cannot be started; with REQUIRE_SLURM=1 it fails instead.
    """
    required = os.environ.get("REQUIRE_SLURM") == "1"
    if not required and os.environ.get("RUN_SLURM_TESTS") != "1":
        pytest.skip(
            "SLURM tests are opt-in: RUN_SLURM_TESTS=1 starts a local cluster (as root: rewrites "
            "/etc/slurm/slurm.conf and starts munged, slurmctld, slurmd; restored afterwards)"
        )
    from slurm_cluster import SlurmUnavailable, local_slurm_cluster

    try:
        with local_slurm_cluster() as cluster:
            yield cluster
            return
    except SlurmUnavailable as e:
        reason = e.reason
    if required:
        pytest.fail(f"REQUIRE_SLURM=1 but no local SLURM cluster: {reason}", pytrace=False)
    pytest.skip(f"no local SLURM cluster: {reason}")


# --- Tiny twin-experiment data shared by the unit tests --------------------------------------

#: Lorenz-63: the paper's observation set-up (x1 only, every 8 steps, 10 blank steps at each end)
#: on a short trajectory cut into few windows.
L63_DATA = {
    "system": "l63",
    "dt": 0.01,
    "x0": [8.0, 0.0, 30.0],
    "spinup": 5.0,
    "n_steps": 3000,
    "window": 200,
    "n_train": 128,
    "n_val": 32,
    "n_test": 32,
    "train_range": [0, 1800],
    "val_range": [1800, 2400],
    "test_range": [2400, 3000],
    "obs": {"every": 8, "components": [0], "blank_ends": 10, "noise_var": 2.0},
    "seed": 11,
}

#: Lorenz-96: 40 variables, every 4 steps, 20 of 40 components at random (shared by the split).
L96_DATA = {
    "system": "l96",
    "dt": 0.05,
    "x0": [8.0] * 40,
    "perturb": [20, 0.01],
    "spinup": 5.0,
    "n_steps": 1200,
    "window": 200,
    "n_train": 32,
    "n_val": 16,
    "n_test": 16,
    "train_range": [0, 700],
    "val_range": [700, 950],
    "test_range": [950, 1200],
    "obs": {"every": 4, "n_random": 20, "shared": True, "noise_var": 2.0},
    "seed": 5,
}


def _simulate(tmp_path_factory, cfg: dict, name: str) -> dict:
    from fourdvarnet import pipeline

    out = tmp_path_factory.mktemp(name)
    paths = {split: out / f"{cfg['system']}_{split}.nc" for split in ("train", "val", "test")}
    pipeline.simulate(cfg, paths)
    return paths


@pytest.fixture(scope="session")
def l63_cfg() -> dict:
    """The raw data config of the tiny L63 set (a fresh deep copy: tests may edit it)."""
    import copy

    return copy.deepcopy(L63_DATA)


@pytest.fixture(scope="session")
def l96_cfg() -> dict:
    import copy

    return copy.deepcopy(L96_DATA)


@pytest.fixture(scope="session")
def l63_files(tmp_path_factory) -> dict:
    """Paths of the tiny L63 train/val/test NetCDF files written by ``pipeline.simulate``."""
    return _simulate(tmp_path_factory, L63_DATA, "l63_data")


@pytest.fixture(scope="session")
def l96_files(tmp_path_factory) -> dict:
    return _simulate(tmp_path_factory, L96_DATA, "l96_data")


def load_normalised(path):
    """A split normalised by its training statistics: ``(split, normalizer, fill)``.

    ``fill`` is the per-component training mean in normalised units (the initial value of
    components that are never observed), as the pipeline computes it.
    """
    import numpy as np
    import torch

    from fourdvarnet.data import Normalizer, load_split

    split = load_split(path)
    norm = Normalizer.from_attrs(split.attrs)
    fill = (np.asarray(split.attrs["train_component_mean"], dtype=np.float32) - norm.mean) / (
        norm.std
    )
    return norm.encode(split), norm, torch.as_tensor(fill)


@pytest.fixture(scope="session")
def normalised():
    """``normalised(path) -> (split, normalizer, fill)``: see ``load_normalised``."""
    return load_normalised


#: A small GENN, so that a learned row trains in a second or two.
SMALL_MODEL = {"genn": {"width": 12, "hidden": 8, "kernel": 5, "pool": 4}}

#: Two epochs with a schedule step, two batches per epoch on the tiny L63 training split.
SMALL_TRAIN = {
    "epochs": 2,
    "batch_size": 64,
    "schedule": [{"epoch": 0, "n_iter": 2, "lr": 1e-3}, {"epoch": 1, "n_iter": 3, "lr": 5e-4}],
    "pretrain_epochs": 1,
    "val_n_iter": 3,
    "device": "cpu",
    "collapse_ratio": 0.0,  # two steps do not train a network: no collapse check
}

#: Test-time evaluation: few iterations, FSGD short enough for a unit test.
SMALL_EVAL = {
    "n_iter": 3,
    "batch_size": 16,
    "fsgd": {"step": 20.0, "n_iter": 40, "batch_size": 16},
    "fixed_point_iter": 5,
    "device": "cpu",
}


def train_small(files: dict, checkpoint, row="supervised-genn-conv", seed=0, train_cfg=None):
    """Train ``row`` on the tiny L63 set with the small configs; returns the training record."""
    import copy

    from fourdvarnet import pipeline

    return pipeline.train_row(
        row,
        "l63",
        seed,
        files["train"],
        files["val"],
        copy.deepcopy(SMALL_MODEL),
        copy.deepcopy(train_cfg or SMALL_TRAIN),
        checkpoint,
    )


@pytest.fixture(scope="session")
def l63_trained(tmp_path_factory, l63_files):
    """One trained supervised GENN + aG-Conv row: ``{'checkpoint': path, 'record': dict}``."""
    ckpt = tmp_path_factory.mktemp("l63_model") / "supervised-genn-conv_seed0.pt"
    record = train_small(l63_files, ckpt)
    return {"checkpoint": ckpt, "record": record}


@pytest.fixture
def small():
    """Fresh copies of the small model/train/eval configs, and the training helper."""
    import copy
    from types import SimpleNamespace

    return SimpleNamespace(
        model=copy.deepcopy(SMALL_MODEL),
        train=copy.deepcopy(SMALL_TRAIN),
        eval=copy.deepcopy(SMALL_EVAL),
        train_row=train_small,
    )
