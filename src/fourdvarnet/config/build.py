"""Sections built from the config's dicts: unknown keys refused, values checked."""

from __future__ import annotations

import dataclasses

from .base import ConfigError
from .data import ObsConfig
from .evaluate import BayesConfig, EnksConfig, FsgdConfig, LbfgsConfig
from .model import DirectConfig, GennConfig
from .train import Stage, TrainConfig


def from_dict(cls, d: dict | None, where: str):
    """Build dataclass ``cls`` from ``d``, refusing keys it does not know."""
    d = dict(d or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {}
    for name, value in d.items():
        sub = names[name].type
        if dataclasses.is_dataclass(_SUBCONFIGS.get(sub)):
            value = from_dict(_SUBCONFIGS[sub], value, f"{where}.{name}")
        kwargs[name] = value
    obj = cls(**kwargs)
    obj.check(where)
    return obj


_SUBCONFIGS = {
    "ObsConfig": ObsConfig,
    "GennConfig": GennConfig,
    "DirectConfig": DirectConfig,
    "FsgdConfig": FsgdConfig,
    "LbfgsConfig": LbfgsConfig,
    "EnksConfig": EnksConfig,
    "BayesConfig": BayesConfig,
}


def stages(raw: list) -> list[Stage]:
    return [from_dict(Stage, s, f"schedule[{i}]") for i, s in enumerate(raw)]


def train_config(d: dict | None, where: str = "train") -> TrainConfig:
    d = dict(d or {})
    schedule = stages(d.pop("schedule", [{"epoch": 0, "n_iter": 5, "lr": 1e-3}]))
    cfg = from_dict(TrainConfig, d, where)
    cfg.schedule = schedule
    cfg.check(where)
    return cfg
