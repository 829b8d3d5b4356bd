"""What every configuration section shares: the error, the range check, ``as_dict``."""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _check(cond: bool, key: str, value: Any, expect: str) -> None:
    if not cond:
        raise ConfigError(f"{key} = {value!r}: {expect}")


def _check_kernel(kernel: int, key: str) -> None:
    _check(kernel % 2 == 1 and kernel >= 3, key, kernel, "must be odd and >= 3")


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)
