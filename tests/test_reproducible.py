"""The data are the same bits on every machine: BLAS kernels and thread counts do not change them.

The truth is chaotic, so a last-bit difference in one step grows into a different attractor
sample within a few hundred steps; these tests would catch any BLAS call or reduction whose order
depends on the machine. ``OPENBLAS_CORETYPE=Haswell`` selects the kernels OpenBLAS picks on an
AVX2-only machine.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("l63", "l96")
SPLITS = ("train", "val", "test")

#: SHA-256 of the ci preset's truth arrays (float64, little-endian, (sample, time, component)).
#: A change here is a change of every number of every preset: make it deliberately, regenerate
#: reference/, and say so in REPRODUCTION.md.
CI_TRUTH_SHA256 = {
    "l63": {
        "train": "be4ad74eb6ea08331e38e77e30dc36b1709fe0cb027a13316b0da02af8154b45",
        "val": "9d4911ee116fe011abfc48920599cefa60d59743b0bdbbd5e1e6a6f1f3f41e94",
        "test": "1ec750ec7536c936ff0d1efd3c6c41c591d16ab9158b09532698c0cd86c72ea5",
    },
    "l96": {
        "train": "636b49750570cff60f93c794cc337031202caf9160303215566705ac5edb9f2f",
        "val": "08a705a182f4b9f9607e6db0819e49bd85b3ffa5aabfcc09b31625122eff901d",
        "test": "54222e09491f9d23e6fd5afd43e7fc494dbb091bf68793f598a845901a53aed1",
    },
}

ENVIRONMENTS = {
    "default": {},
    "haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "two_threads": {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
}


def truth_sha256(ds: xr.Dataset) -> str:
    return hashlib.sha256(np.ascontiguousarray(ds.x.values, dtype="<f8").tobytes()).hexdigest()


def _simulate(out: Path, env_extra: dict) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "OMP_"))}
    env.update(env_extra)
    for system in SYSTEMS:
        subprocess.run(
            [sys.executable, "-m", "fourdvarnet.cli", "--config", str(ROOT / "config.yaml"),
             "--preset", "ci", "simulate", "--system", system, "--out-dir", str(out)],
            env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip


@pytest.fixture(scope="module")
def ci_data(tmp_path_factory):
    """The ci preset's data simulated in a subprocess under each environment."""
    out = {}
    for name, env in ENVIRONMENTS.items():
        d = tmp_path_factory.mktemp(f"data_{name}")
        _simulate(d, env)
        out[name] = {
            (system, split): xr.load_dataset(d / f"{system}_{split}.nc")
            for system in SYSTEMS
            for split in SPLITS
        }
    return out


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if e != "default"])
def test_data_are_identical_under_other_blas_kernels_and_threads(ci_data, env):
    for key, ref in ci_data["default"].items():
        other = ci_data[env][key]
        for var in ("x", "y", "mask"):
            np.testing.assert_array_equal(other[var].values, ref[var].values, err_msg=str(key))
        for attr in ("train_mean", "train_std", "train_component_mean", "train_component_cov"):
            np.testing.assert_array_equal(other.attrs[attr], ref.attrs[attr], err_msg=attr)


@pytest.mark.parametrize("system", SYSTEMS)
def test_ci_truth_checksums_are_pinned(ci_data, system):
    got = {split: truth_sha256(ci_data["default"][(system, split)]) for split in SPLITS}
    assert got == CI_TRUTH_SHA256[system], (
        "the ci preset's truth changed: if deliberate, pin the new checksums "
        f"{got} and regenerate reference/"
    )


def test_data_record_their_integrator(ci_data):
    ds = ci_data["default"][("l63", "train")]
    assert "RK4" in ds.attrs["integrator"]
    assert ds.attrs["integrator_substeps"] == 5
