"""Twin-experiment data: truth windows, observation masks, noisy observations, NetCDF I/O.

One long true trajectory is integrated (``dynamics.simulate``); train, validation and test windows
of ``window`` steps are cut at random start times inside separate time ranges, so no validation or
test window shares a state with a training window. Observations ``y`` are the truth plus Gaussian
noise on the observed entries (``mask == 1``) and NaN elsewhere. Each split is one NetCDF file with
variables ``x``, ``y``, ``mask`` of dimensions ``(sample, time, component)``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from . import __version__
from .config import DataConfig, as_dict
from .dynamics import simulate

SPLITS = ("train", "val", "test")
REQUIRED_VARS = ("x", "y", "mask")


def git_commit() -> str:
    """The commit of the working tree the package runs from, or 'unknown'."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def true_trajectory(cfg: DataConfig) -> np.ndarray:
    """The long true trajectory, shape ``(n_steps, n_components)``."""
    x0 = np.array(cfg.x0, dtype=np.float64)
    if cfg.perturb is not None:
        index, value = cfg.perturb
        x0[int(index)] += value
    return simulate(cfg.system, x0, cfg.dt, cfg.n_steps, spinup=cfg.spinup, substeps=cfg.substeps)


def observation_mask(cfg: DataConfig, n: int, n_comp: int, rng: np.random.Generator) -> np.ndarray:
    """Mask of observed entries for ``n`` windows, shape ``(n, window, n_comp)``, 1 = observed."""
    obs = cfg.obs
    t = np.arange(cfg.window)
    times = (t % obs.every == 0) & (t >= obs.blank_ends) & (t < cfg.window - obs.blank_ends)
    mask = np.zeros((n, cfg.window, n_comp), dtype=np.float32)
    if obs.components is not None:
        mask[:, times[:, None].repeat(n_comp, 1) & np.isin(np.arange(n_comp), obs.components)] = 1
        return mask
    for ti in np.flatnonzero(times):
        if obs.shared:
            comps = rng.permutation(n_comp)[: obs.n_random]
            mask[:, ti, comps] = 1
        else:
            comps = np.argsort(rng.random((n, n_comp)), axis=1)[:, : obs.n_random]
            np.put_along_axis(mask[:, ti, :], comps, 1, axis=1)
    return mask


def sample_split(cfg: DataConfig, traj: np.ndarray, split: str, rng: np.random.Generator):
    """Cut the windows of one split and observe them: returns ``(start, x, y, mask)``."""
    lo, hi = getattr(cfg, f"{split}_range")
    n = getattr(cfg, f"n_{split}")
    start = np.sort(rng.integers(lo, hi - cfg.window + 1, size=n))
    x = np.stack([traj[s : s + cfg.window] for s in start])
    mask = observation_mask(cfg, n, traj.shape[1], rng)
    noise = np.sqrt(cfg.obs.noise_var) * rng.standard_normal(x.shape)
    y = np.where(mask > 0, x + noise, np.nan)
    return start, x, y, mask


def make_splits(cfg: DataConfig) -> dict[str, xr.Dataset]:
    """Simulate the truth and sample every split; the same config gives identical arrays."""
    traj = true_trajectory(cfg)
    rng = np.random.default_rng(cfg.seed)
    attrs = {
        "system": cfg.system,
        "dt": cfg.dt,
        "window": cfg.window,
        "noise_var": cfg.obs.noise_var,
        "obs_every": cfg.obs.every,
        "obs_sampling": _describe_obs(cfg),
        "seed": cfg.seed,
        "config": json.dumps(as_dict(cfg)),
        "package_version": __version__,
        "git_commit": git_commit(),
        "integrator": (
            f"classical RK4, fixed step dt/{cfg.substeps}, element-wise float64 "
            "(bit-identical on every IEEE-754 machine)"
        ),
        "integrator_substeps": cfg.substeps,
        "numpy_version": np.__version__,
    }
    out = {}
    for split in SPLITS:
        start, x, y, mask = sample_split(cfg, traj, split, rng)
        out[split] = to_dataset(x, y, mask, cfg.dt, dict(attrs, split=split), start=start)
    train_x = out["train"].x
    stats = {
        "train_mean": float(train_x.mean()),
        "train_std": float(train_x.std()),
        "train_component_mean": train_x.mean(("sample", "time")).values,
        # climatology of the ensemble smoother, flattened (component x component)
        "train_component_cov": covariance(train_x.values.reshape(-1, traj.shape[1])).reshape(-1),
    }
    for ds in out.values():
        ds.attrs.update(stats)
    return out


def data_setup(attrs: dict) -> dict:
    """The data set-up of a split file (from its ``config`` attribute): what a table row or a
    figure must record, and what two evaluations must share to be compared."""
    cfg = json.loads(attrs["config"])
    obs = cfg["obs"]
    return {
        "system": cfg["system"],
        "obs_every": obs["every"],
        "obs_components": obs["components"],
        "obs_n_random": obs["n_random"],
        "obs_blank_ends": obs["blank_ends"],
        "noise_var": obs["noise_var"],
        "window": cfg["window"],
        "windows": [cfg["n_train"], cfg["n_val"], cfg["n_test"]],
        "dt": cfg["dt"],
        "data_seed": cfg["seed"],
    }


def describe_setup(setup: dict) -> str:
    """A data set-up (``data_setup``) in one short line."""
    what = (
        f"x{[c + 1 for c in setup['obs_components']]}"
        if setup["obs_components"] is not None
        else f"{setup['obs_n_random']} random components"
    )
    n = "/".join(str(v) for v in setup["windows"])
    return (
        f"obs {what} every {setup['obs_every']} steps, noise var {setup['noise_var']:g}; "
        f"{n} windows of {setup['window']}"
    )


def covariance(a: np.ndarray) -> np.ndarray:
    """Sample covariance of the rows of ``a`` (n, c), without BLAS (``np.cov`` calls ``dot``,
    whose last bits depend on the BLAS kernel): the data files stay bit-identical everywhere."""
    d = a - a.mean(axis=0)
    return np.stack([(d[:, i : i + 1] * d).sum(axis=0) for i in range(a.shape[1])]) / (len(a) - 1)


def _describe_obs(cfg: DataConfig) -> str:
    o = cfg.obs
    what = (
        f"components {o.components}"
        if o.components is not None
        else f"{o.n_random} random components per observation time"
        + (" (shared by all windows)" if o.shared else " (drawn per window)")
    )
    return (
        f"{what}, every {o.every} steps, none in the first and last {o.blank_ends} steps, "
        f"Gaussian noise of variance {o.noise_var}"
    )


def to_dataset(x, y, mask, dt: float, attrs: dict, start=None, **extra) -> xr.Dataset:
    """Wrap arrays of shape ``(sample, time, component)`` into a self-describing Dataset."""
    n, t, c = x.shape
    dims = ("sample", "time", "component")
    data = {
        "x": (dims, x, {"long_name": "true state", "units": "model units"}),
        "y": (
            dims,
            y,
            {"long_name": "noisy observations, NaN where not observed", "units": "model units"},
        ),
        "mask": (dims, mask.astype(np.int8), {"long_name": "observation mask (1 = observed)"}),
    }
    for name, value in extra.items():
        data[name] = (dims, value, {"units": "model units"})
    if start is not None:
        data["start"] = (("sample",), start, {"long_name": "window start index in the trajectory"})
    coords = {
        "time": ("time", dt * np.arange(t), {"units": "model time units"}),
        "component": ("component", np.arange(c)),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` compressed, atomically: the file appears only once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
    ds.to_netcdf(tmp, encoding=enc, engine="netcdf4")
    tmp.replace(path)


@dataclass
class Split:
    """A split loaded as tensors in the model layout ``(sample, component, time)``."""

    x: torch.Tensor
    y: torch.Tensor  # zero where not observed
    mask: torch.Tensor
    attrs: dict
    start: np.ndarray | None = None  # each window's first model step in the trajectory

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> Split:
        return Split(
            self.x.to(device), self.y.to(device), self.mask.to(device), self.attrs, self.start
        )

    def subset(self, idx) -> Split:
        start = None if self.start is None else self.start[np.asarray(idx)]
        return Split(self.x[idx], self.y[idx], self.mask[idx], self.attrs, start)


class UnreadableFileError(OSError):
    """An input file that cannot be read (truncated, corrupt); its message says which file, what
    is wrong and how to rebuild it. ``pipeline.job_log`` prints that message alone on the console
    and keeps the traceback for the job's log."""

    def __init__(self, message: str, path: str | Path):
        super().__init__(message)
        self.path = str(path)


#: A file of the workflow's layout, ``results/<preset>/data/...`` or ``results/<preset>/eval/...``.
WORKFLOW_FILE = re.compile(r"(?:^|/)(results/(?P<preset>[A-Za-z0-9_]+)/(?:data|eval|models)/.+)$")


#: Set by the workflow (``workflow/rules/common.smk``) for its jobs: the user's own
#: ``--configfile``/``--config`` options (``workflow_config.rebuild_options``).
REBUILD_OPTIONS = "FOURDVARNET_REBUILD_OPTIONS"


def rebuild_advice(path: str | Path) -> str:
    """How to rebuild ``path``: for a file of the workflow, the Snakemake command that remakes it
    and every file made from it, with the user's own config options (deleting it alone is not
    enough: Snakemake does not remake an intermediate file whose downstream results exist, and
    says 'Nothing to be done')."""
    m = WORKFLOW_FILE.search(Path(path).as_posix())
    if not m:
        return "delete it and rerun"
    options = os.environ.get(REBUILD_OPTIONS) or f"--config preset={m['preset']}"
    return (
        f"rebuild it, and what was made from it, with `snakemake {options} --forcerun {m[1]}` "
        "(deleting it is not enough once results made from it exist)"
    )


def read_json(path: str | Path, where: str, written_by: str) -> dict:
    """A JSON file's content; an unreadable one raises an ``UnreadableFileError`` naming it,
    the rule that writes it and how to rebuild it (as ``read_netcdf``)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableFileError(
            f"{where}: unreadable JSON file, truncated or corrupt ({type(e).__name__}: {e}); it "
            f"is written by {written_by}: {rebuild_advice(path)}",
            path,
        ) from e


def read_torch(path: str | Path, where: str, written_by: str) -> dict:
    """A ``torch.save`` file's content (on the CPU); an unreadable one raises an
    ``UnreadableFileError`` naming it, the rule that writes it and how to rebuild it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise UnreadableFileError(
            f"{where}: unreadable checkpoint file, truncated or corrupt ({type(e).__name__}: "
            f"{e}); it is written by {written_by}: {rebuild_advice(path)}",
            path,
        ) from e


def read_netcdf(path: str | Path, where: str, written_by: str) -> xr.Dataset:
    """``path`` loaded into memory; an unreadable (truncated, corrupt) file raises an
    ``UnreadableFileError`` (an ``OSError``) that starts with ``where``, names the rule that
    writes it (``written_by``) and says how to rebuild it (``rebuild_advice``)."""
    try:
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, RuntimeError, ValueError) as e:
        e.__suppress_context__ = True  # xarray's file-cache miss (a KeyError) tells nothing
        detail = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
        raise UnreadableFileError(
            f"{where}: unreadable NetCDF file, truncated or corrupt ({detail}); it is written by "
            f"{written_by}: {rebuild_advice(path)}",
            path,
        ) from e


def load_dataset(path: str | Path) -> xr.Dataset:
    """Open a split file, checking it holds the variables the pipeline needs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    ds = read_netcdf(path, str(path), "the workflow's `simulate` rule (or `fourdvarnet simulate`)")
    missing = [v for v in REQUIRED_VARS if v not in ds]
    if missing:
        raise ValueError(f"{path}: missing variable(s) {missing}; expected {list(REQUIRED_VARS)}")
    for v in REQUIRED_VARS:
        if ds[v].dims != ("sample", "time", "component"):
            raise ValueError(
                f"{path}: variable {v!r} has dims {ds[v].dims}, "
                "expected ('sample', 'time', 'component')"
            )
    return ds


def load_split(path: str | Path, dtype=torch.float32) -> Split:
    """Load a split file as tensors, checking that every observed entry is finite."""
    ds = load_dataset(path)
    x = ds.x.values
    y = ds.y.values
    mask = ds.mask.values.astype(bool)
    bad = mask & ~np.isfinite(y)
    if bad.any():
        s, t, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: {int(bad.sum())} observed entries of y are not finite, "
            f"first at sample={s}, time={t}, component={c}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: the truth x holds non-finite values")
    y = np.where(mask, y, 0.0)

    def to_t(a):
        return torch.as_tensor(np.ascontiguousarray(a.transpose(0, 2, 1)), dtype=dtype)

    start = ds.start.values if "start" in ds else None
    return Split(to_t(x), to_t(y), to_t(mask), dict(ds.attrs), start)


@dataclass(frozen=True)
class Normalizer:
    """Scalar normalisation by the training truth's mean and standard deviation."""

    mean: float
    std: float

    @classmethod
    def from_attrs(cls, attrs: dict) -> Normalizer:
        return cls(float(attrs["train_mean"]), float(attrs["train_std"]))

    def encode(self, split: Split) -> Split:
        """Normalise truth and observations (unobserved entries stay 0)."""
        return Split(
            (split.x - self.mean) / self.std,
            (split.y - self.mean) / self.std * split.mask,
            split.mask,
            split.attrs,
            split.start,
        )

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def interpolate(y: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """Linear interpolation in time of the observations (the solvers' initial state x0).

    ``y`` and ``mask`` have shape ``(batch, component, time)``. Between two observation times the
    values are interpolated linearly; before the first and after the last they are held constant;
    series with no observation take ``fill`` (a scalar or one value per component).
    """
    b, c, t = y.shape
    obs = mask > 0
    idx = torch.arange(t, device=y.device).expand(b, c, t)
    prev = torch.where(obs, idx, torch.full_like(idx, -1)).cummax(dim=-1).values
    nxt = torch.where(obs, idx, torch.full_like(idx, t)).flip(-1).cummin(dim=-1).values.flip(-1)
    has_prev, has_next = prev >= 0, nxt < t
    y_prev = y.gather(-1, prev.clamp(min=0))
    y_next = y.gather(-1, nxt.clamp(max=t - 1))
    span = (nxt - prev).clamp(min=1).to(y.dtype)
    w = (idx - prev).to(y.dtype) / span
    x0 = torch.where(
        has_prev & has_next, y_prev + w * (y_next - y_prev), torch.where(has_prev, y_prev, y_next)
    )
    fill = torch.as_tensor(fill, dtype=y.dtype, device=y.device).reshape(-1, 1)
    fill = fill.expand(c, 1) if fill.numel() == 1 else fill
    never = ~obs.any(dim=-1, keepdim=True)
    return torch.where(never, fill.expand(c, t).unsqueeze(0).expand(b, c, t), x0)
