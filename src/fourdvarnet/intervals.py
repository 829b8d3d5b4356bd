"""Uncertainty of the table's R-scores: a moving-block bootstrap over the test windows.

The test windows are drawn at random start times inside one stretch of a trajectory, so windows
that start close together share most of their truth and observations: their errors are not
independent, and an interval that treats them as such is too narrow. Windows are put in order of
their start and resampled in blocks of consecutive windows that span at least one window length
(``block_length``), so that windows which overlap stay together.

With several seeds of a row the seeds are resampled too (drawn with replacement in each
resample), so the interval holds both the test-set noise and the seed-to-seed spread. A paired
interval of the difference of two rows resamples the same blocks of windows for both rows (the
rows are scored on the same windows), their seeds independently.

Inputs are per-window R-scores ``(seeds, windows)`` in the order of the windows' starts.
"""

from __future__ import annotations

import math

import numpy as np

#: Resamples of every interval (its percentiles move by well under 1% of its width beyond this).
N_BOOT = 2000

#: Two-sided level of every interval.
LEVEL = 0.95


def block_length(start: np.ndarray, window: int) -> int:
    """Windows per block: enough consecutive windows (sorted by start) to span ``window`` steps
    at the mean spacing of the starts, so that a block is at least as long as two windows'
    overlap can be."""
    start = np.sort(np.asarray(start))
    if len(start) < 2:
        return 1
    gap = (start[-1] - start[0]) / (len(start) - 1)
    if gap <= 0:
        return len(start)
    return int(min(len(start), max(1, math.ceil(window / gap))))


def block_indices(n: int, length: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices of moving-block resamples of ``range(n)``: blocks of ``length``
    consecutive indices at uniform starts, concatenated and cut to ``n``."""
    length = max(1, min(length, n))
    k = math.ceil(n / length)
    starts = rng.integers(0, n - length + 1, size=(n_boot, k))
    idx = (starts[:, :, None] + np.arange(length)).reshape(n_boot, -1)
    return idx[:, :n]


def _seed_means(errors: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, windows)``: per resample, the per-window mean over seeds drawn with
    replacement."""
    errors = np.atleast_2d(np.asarray(errors, dtype=float))
    s = errors.shape[0]
    if s == 1:
        return np.broadcast_to(errors[0], (n_boot, errors.shape[1]))
    draws = rng.integers(0, s, size=(n_boot, s))
    return errors[draws].mean(axis=1)


def _resampled_means(per_window: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(per_window, idx, axis=1).mean(axis=1)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def interval(
    errors, length: int, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean R-score of one row: ``errors`` ``(seeds, windows)``."""
    errors = np.atleast_2d(np.asarray(errors, dtype=float))
    rng = np.random.default_rng(seed)
    idx = block_indices(errors.shape[1], length, n_boot, rng)
    return _percentiles(_resampled_means(_seed_means(errors, n_boot, rng), idx), level)


def paired_interval(
    errors_a, errors_b, length: int, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``b - a`` (R-score of row b minus row a; negative: b is better) and its paired
    percentile interval; ``errors_*`` ``(seeds, windows)`` on the same windows."""
    a = np.atleast_2d(np.asarray(errors_a, dtype=float))
    b = np.atleast_2d(np.asarray(errors_b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"rows scored on {a.shape[1]} and {b.shape[1]} windows: not paired")
    rng = np.random.default_rng(seed)
    idx = block_indices(a.shape[1], length, n_boot, rng)
    diff = _resampled_means(_seed_means(b, n_boot, rng) - _seed_means(a, n_boot, rng), idx)
    lo, hi = _percentiles(diff, level)
    return float(b.mean() - a.mean()), lo, hi


def verdict(lo: float, hi: float, a: str, b: str) -> str:
    """The claim a paired interval of ``b - a`` supports: which row is better, or neither."""
    if hi < 0:
        return f"{b} better"
    if lo > 0:
        return f"{a} better"
    return "within noise"
