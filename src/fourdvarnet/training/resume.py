"""Resuming an interrupted training: the state after each completed epoch, written atomically.

The file holds the weights, the optimiser, the random generators, the best weights so far and
the history; a training that finds a file of the same row, training config and data size goes
on from its last completed epoch, to the same weights as an uninterrupted run (on the CPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..config import Experiment, TrainConfig, as_dict

log = logging.getLogger(__name__)


def resume_key(exp: Experiment, cfg: TrainConfig, n_train: int) -> dict:
    """What a resume file must match to be taken up: the row, its training config and data size."""
    return {"experiment": exp.name, "train": as_dict(cfg), "n_train": n_train}


def load_resume(path: str | Path | None, key: dict) -> dict | None:
    """The state saved by the last completed epoch of an interrupted training, or None (no file,
    or one written for another row or config, which is then ignored and overwritten)."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        log.warning("ignoring %s: written by a training of another row or config", path)
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"] + 1)
    return state


def save_resume(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous epoch's file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
