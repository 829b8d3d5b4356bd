"""The workflow's adapter to Snakemake's command line (used by ``workflow/rules/common.smk``).

Snakemake hands the Snakefile the user's values as it parsed them: ``--configfile`` files and
``--config key=value`` pairs merged (``workflow.config_settings.overwrite_config``), and the
``--config`` pairs alone (``workflow.config_settings.config``), as ``immutables.Map``. Here they
become plain dicts with the ``--config`` strings read as YAML, ready for
``fourdvarnet.config.resolve_preset``. Nothing here imports Snakemake: the package and its tests
run without it.
"""

from __future__ import annotations

import re
import shlex

import yaml

from .config import deep_merge

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_command_line(values) -> dict:
    """``--config`` values with the strings nested in them read as YAML scalars.

    Snakemake reads ``--config key=value`` with int, float, bool, then YAML's base loader, which
    leaves every nested scalar a string: ``'train={l63: {epochs: 3}}'`` gives ``'3'``. Here such
    strings become what YAML makes of them (``3``, ``1.0e-3``, ``true``; also ``1e-3``, which
    YAML 1.1 leaves a string); top-level values are kept as Snakemake parsed them.
    """

    def leaf(v):
        if isinstance(v, dict):
            return {k: leaf(x) for k, x in v.items()}
        if isinstance(v, list):
            return [leaf(x) for x in v]
        if not isinstance(v, str):
            return v
        if _NUMBER.fullmatch(v.strip()):
            return int(v) if re.fullmatch(r"[-+]?\d+", v.strip()) else float(v)
        try:
            parsed = yaml.safe_load(v)
        except yaml.YAMLError:
            return v
        return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else v

    return {k: leaf(v) if isinstance(v, (dict, list)) else v for k, v in dict(values).items()}


def user_config(overwrite_config, command_line) -> dict:
    """The user's values: ``overwrite_config`` (Snakemake's merge of ``--configfile`` files and
    ``--config``) with the ``--config`` part (``command_line``) parsed by ``parse_command_line``."""
    return deep_merge(_plain(overwrite_config), parse_command_line(_plain(command_line)))


def _plain(v):
    """Mappings (Snakemake passes immutables.Map) as dicts, recursively."""
    if hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def rebuild_options(config_args, configfiles) -> str:
    """The user's own ``--configfile`` and ``--config`` options, quoted for a shell, for the
    rebuild advice of an unreadable file (``data.rebuild_advice``), so that pasting it rebuilds
    the user's set-up, not the default one."""
    out = []
    if configfiles:
        out += ["--configfile", *map(str, configfiles)]
    if config_args:
        out += ["--config", *map(str, config_args)]
    return shlex.join(out)


#: A point of the observation sweep in a results path: ``<root>/sweep/every<E>-noise<V>``.
_SWEEP_POINT = re.compile(r"(?:^|/)sweep/every([0-9]+)-noise([0-9.]+)$")


def sweep_part(root: str, every: int, noise_var: float) -> str:
    """The results path part of a sweep point below ``root`` (``results/<part>/...``)."""
    return f"{root}/sweep/every{int(every)}-noise{float(noise_var):g}"


def sweep_point(part: str) -> tuple[int, float] | None:
    """(observation spacing, noise variance) of a sweep point's path part, else None."""
    m = _SWEEP_POINT.search(part)
    return (int(m[1]), float(m[2])) if m else None


def point_data(data: dict, part: str) -> dict:
    """A system's data config, with the observation set-up of the sweep point ``part`` (if it
    is one)."""
    point = sweep_point(part)
    if point is None:
        return data
    return deep_merge(data, {"obs": {"every": point[0], "noise_var": point[1]}})
