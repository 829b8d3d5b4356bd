"""Twin-experiment data: masks, noise, splits, reproducibility, NetCDF I/O, interpolation."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from fourdvarnet import __version__
from fourdvarnet.config import ConfigError, DataConfig, as_dict, from_dict
from fourdvarnet.data import (
    interpolate,
    load_split,
    make_splits,
    observation_mask,
    true_trajectory,
    write_netcdf,
)

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def l63_ds(l63_files):
    return {s: xr.load_dataset(l63_files[s]) for s in SPLITS}


@pytest.fixture(scope="module")
def l96_ds(l96_files):
    return {s: xr.load_dataset(l96_files[s]) for s in SPLITS}


def test_l63_mask_component0_every8_blank_ends(l63_ds):
    expected_times = np.arange(16, 185, 8)  # 16, 24, ..., 184
    assert len(expected_times) == 22
    for ds in l63_ds.values():
        mask = ds.mask.values
        assert mask.shape[1:] == (200, 3)
        # only component 0 is ever observed
        assert mask[:, :, 1:].sum() == 0
        for m in mask:
            np.testing.assert_array_equal(np.flatnonzero(m[:, 0]), expected_times)
        assert set(np.unique(mask)) == {0, 1}


def test_l96_mask_every4_twenty_random_shared(l96_ds):
    for ds in l96_ds.values():
        mask = ds.mask.values  # (sample, time, component)
        times = np.flatnonzero(mask.any(axis=(0, 2)))
        np.testing.assert_array_equal(times, np.arange(0, 200, 4))
        per_time = mask.sum(axis=2)  # (sample, time)
        assert (per_time[:, ::4] == 20).all()
        assert (per_time[:, 1::4] == 0).all() and (per_time[:, 2::4] == 0).all()
        # shared: every window has the same mask
        assert (mask == mask[:1]).all()
        # the draw changes across observation times
        assert len({tuple(np.flatnonzero(mask[0, t])) for t in times}) > 1


def test_l96_mask_per_window_when_not_shared(l96_cfg):
    raw = dict(l96_cfg, obs=dict(l96_cfg["obs"], shared=False))
    cfg = from_dict(DataConfig, raw, "data.l96")
    mask = observation_mask(cfg, 6, 40, np.random.default_rng(0))
    assert mask.shape == (6, 200, 40)
    assert (mask[:, ::4].sum(axis=2) == 20).all()
    assert mask[:, 1::4].sum() == 0
    # at each observation time the windows do not all share one draw
    for t in range(0, 200, 4):
        assert len({tuple(np.flatnonzero(mask[i, t])) for i in range(6)}) > 1


@pytest.mark.parametrize("which", ["l63", "l96"])
def test_noise_variance_and_nans(which, l63_ds, l96_ds):
    ds_all = l63_ds if which == "l63" else l96_ds
    noise = []
    for ds in ds_all.values():
        x, y, mask = ds.x.values, ds.y.values, ds.mask.values
        # y is NaN exactly where mask is 0
        np.testing.assert_array_equal(np.isnan(y), mask == 0)
        noise.append((y - x)[mask == 1])
    noise = np.concatenate(noise)
    n = noise.size
    var = noise.var()
    # the sample variance of n Gaussian draws has standard deviation 2 sqrt(2 / n) here
    assert abs(var - 2.0) < 5 * 2.0 * np.sqrt(2.0 / n), (var, n)
    assert abs(noise.mean()) < 5 * np.sqrt(2.0 / n)


@pytest.mark.parametrize("which", ["l63", "l96"])
def test_windows_inside_their_ranges_and_cut_from_the_truth(
    which, l63_cfg, l96_cfg, l63_ds, l96_ds
):
    raw, ds_all = (l63_cfg, l63_ds) if which == "l63" else (l96_cfg, l96_ds)
    cfg = from_dict(DataConfig, raw, "data")
    traj = true_trajectory(cfg)
    for split in SPLITS:
        ds = ds_all[split]
        lo, hi = raw[f"{split}_range"]
        start = ds.start.values
        assert len(start) == raw[f"n_{split}"] == ds.sizes["sample"]
        assert (start >= lo).all() and (start + raw["window"] <= hi).all()
        for i in (0, len(start) - 1):
            np.testing.assert_allclose(
                ds.x.values[i], traj[start[i] : start[i] + raw["window"]], rtol=1e-12
            )


def test_train_statistics_in_attrs(l63_ds):
    x = l63_ds["train"].x.values
    for ds in l63_ds.values():
        assert ds.attrs["train_mean"] == pytest.approx(x.mean(), rel=1e-10)
        assert ds.attrs["train_std"] == pytest.approx(x.std(), rel=1e-10)
        np.testing.assert_allclose(ds.attrs["train_component_mean"], x.mean(axis=(0, 1)))


def _small_l63(seed):
    return from_dict(
        DataConfig,
        {
            "n_steps": 600,
            "window": 40,
            "n_train": 4,
            "n_val": 2,
            "n_test": 2,
            "train_range": [0, 300],
            "val_range": [300, 450],
            "test_range": [450, 600],
            "obs": {"every": 8, "components": [0], "blank_ends": 2},
            "seed": seed,
        },
        "data.l63",
    )


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (make_splits(_small_l63(s)) for s in (1, 1, 2))
    for split in SPLITS:
        for v in ("x", "y", "mask", "start"):
            np.testing.assert_array_equal(a[split][v].values, b[split][v].values)
        assert not np.array_equal(a[split].y.values, c[split].y.values, equal_nan=True)
    assert not np.array_equal(a["train"].start.values, c["train"].start.values)


def test_netcdf_round_trip(l63_cfg, l63_files):
    cfg = from_dict(DataConfig, l63_cfg, "data.l63")
    fresh = make_splits(cfg)
    for split in SPLITS:
        assert not l63_files[split].with_name(l63_files[split].name + ".part").exists()
        ds = xr.load_dataset(l63_files[split])
        assert ds.x.dims == ds.y.dims == ds.mask.dims == ("sample", "time", "component")
        np.testing.assert_allclose(ds.time.values, 0.01 * np.arange(200), rtol=1e-12)
        np.testing.assert_array_equal(ds.x.values, fresh[split].x.values)
        np.testing.assert_array_equal(ds.y.values, fresh[split].y.values)
        np.testing.assert_array_equal(ds.mask.values, fresh[split].mask.values)
        for key in (
            "system",
            "dt",
            "noise_var",
            "seed",
            "config",
            "package_version",
            "git_commit",
            "train_mean",
            "train_std",
        ):
            assert key in ds.attrs, key
        assert ds.attrs["system"] == "l63"
        assert ds.attrs["dt"] == 0.01
        assert ds.attrs["noise_var"] == 2.0
        assert ds.attrs["seed"] == l63_cfg["seed"]
        assert ds.attrs["package_version"] == __version__
        assert ds.attrs["integrator_substeps"] == cfg.substeps
        # the climatology of the ensemble smoother: the training truth's covariance
        x = ds.x.values.reshape(-1, 3) if split == "train" else None
        if x is not None:
            np.testing.assert_allclose(
                np.reshape(ds.attrs["train_component_cov"], (3, 3)), np.cov(x, rowvar=False)
            )
        assert ds.attrs["split"] == split
        assert json.loads(ds.attrs["config"]) == as_dict(cfg)
        # the stored config rebuilds the same DataConfig
        assert from_dict(DataConfig, json.loads(ds.attrs["config"]), "stored") == cfg


def test_load_split_layout(l63_files):
    ds = xr.load_dataset(l63_files["val"])
    split = load_split(l63_files["val"])
    n = ds.sizes["sample"]
    for t in (split.x, split.y, split.mask):
        assert t.shape == (n, 3, 200)
        assert t.dtype == torch.float32
    np.testing.assert_allclose(split.x.numpy(), ds.x.values.transpose(0, 2, 1), rtol=1e-6)
    mask = ds.mask.values.transpose(0, 2, 1)
    np.testing.assert_array_equal(split.mask.numpy(), mask)
    y = split.y.numpy()
    assert (y[mask == 0] == 0).all()
    np.testing.assert_allclose(y[mask == 1], ds.y.values.transpose(0, 2, 1)[mask == 1], rtol=1e-6)
    assert split.attrs["system"] == "l63" and len(split) == n


def test_interpolate_hand_example():
    # component 0 observed at t=1 (2.0) and t=4 (8.0); component 1 at t=2 only; 2 never.
    y = torch.zeros(1, 3, 6)
    mask = torch.zeros(1, 3, 6)
    y[0, 0, 1], y[0, 0, 4], y[0, 1, 2] = 2.0, 8.0, -1.0
    mask[0, 0, 1] = mask[0, 0, 4] = mask[0, 1, 2] = 1.0
    y[0, 2, 3] = 99.0  # an unobserved value must be ignored
    out = interpolate(y, mask, torch.tensor([10.0, 20.0, 30.0]))
    expected = torch.tensor(
        [
            [2.0, 2.0, 4.0, 6.0, 8.0, 8.0],  # constant, linear (2 -> 8 over 3 steps), constant
            [-1.0] * 6,  # a single observation: held constant
            [30.0] * 6,  # never observed: the fill value of that component
        ]
    )
    torch.testing.assert_close(out[0], expected)
    # a scalar fill applies to every never-observed series
    out = interpolate(y, mask, 5.0)
    torch.testing.assert_close(out[0, 2], torch.full((6,), 5.0))
    torch.testing.assert_close(out[0, :2], expected[:2])


def test_interpolate_batch_independent_and_exact_at_observations(l63_files):
    split = load_split(l63_files["val"])
    out = interpolate(split.y, split.mask, 0.0)
    m = split.mask > 0
    torch.testing.assert_close(out[m], split.y[m])
    torch.testing.assert_close(out[3:4], interpolate(split.y[3:4], split.mask[3:4], 0.0))


def _write(ds, path):
    ds.to_netcdf(path)
    return path


def test_load_split_missing_variable(tmp_path, l63_files):
    ds = xr.load_dataset(l63_files["test"]).drop_vars("mask")
    path = _write(ds, tmp_path / "nomask.nc")
    with pytest.raises(ValueError, match="mask"):
        load_split(path)


def test_load_split_nan_observation(tmp_path, l63_files):
    ds = xr.load_dataset(l63_files["test"])
    s, t, c = np.argwhere(ds.mask.values == 1)[5]
    y = ds.y.values.copy()
    y[s, t, c] = np.nan
    ds["y"] = (ds.y.dims, y)
    path = _write(ds, tmp_path / "nan.nc")
    with pytest.raises(ValueError, match="not finite"):
        load_split(path)


def test_load_split_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "absent.nc")


def test_write_netcdf_is_atomic(tmp_path, l63_files):
    ds = xr.load_dataset(l63_files["test"])
    out = tmp_path / "sub" / "copy.nc"
    write_netcdf(ds, out)
    assert out.exists() and not (tmp_path / "sub" / "copy.nc.part").exists()
    np.testing.assert_array_equal(xr.load_dataset(out).x.values, ds.x.values)


@pytest.mark.parametrize(
    "override,key",
    [
        ({"system": "l42"}, "system"),
        ({"dt": 0.0}, "dt"),
        ({"n_train": -3}, "n_train"),
        ({"train_range": [0, 100]}, "train_range"),
        ({"obs": {"every": 0, "components": [0]}}, "every"),
        ({"obs": {"every": 8}}, "components"),
        ({"obs": {"n_random": 5, "components": [0]}}, "components"),
        ({"n_trian": 10}, "n_trian"),
        ({"obs": {"components": [0], "noise": 1.0}}, "noise"),
    ],
)
def test_data_config_errors(override, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(DataConfig, override, "data.l63")


def test_l96_n_random_out_of_range(l96_cfg):
    raw = dict(l96_cfg, obs=dict(l96_cfg["obs"], n_random=41))
    with pytest.raises(ConfigError, match="n_random"):
        from_dict(DataConfig, raw, "data.l96")
