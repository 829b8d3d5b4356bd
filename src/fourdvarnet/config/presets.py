"""The workflow config as a whole: presets merged, per-row training values, the checks across
sections, schema messages and canonical params."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from .base import ConfigError


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated recursively by ``override`` (new dicts; lists are replaced whole)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def resolve_preset(raw: dict, overrides: dict | None = None) -> dict:
    """Apply the preset named by ``raw['preset']`` (from ``raw['presets']``) onto the base config.

    The base config holds the paper's values; a preset overrides some of them, and
    ``overrides`` (the user's own values: ``--configfile``, ``--config``) override both, key by
    key. The result no longer holds ``presets``.
    """
    name = raw.get("preset", "paper")
    presets = raw.get("presets", {})
    if name not in presets:
        raise ConfigError(f"preset = {name!r}: unknown preset; expected one of {sorted(presets)}")
    base = {k: v for k, v in raw.items() if k != "presets"}
    out = deep_merge(base, presets[name] or {})
    user = {k: v for k, v in (overrides or {}).items() if k != "presets"}
    return deep_merge(out, user)


def row_train(train: dict, row: str) -> dict:
    """The training values of one table row: ``train.<system>`` with its ``rows.<row>``
    overrides merged in (key by key, lists whole), without the ``rows`` table itself."""
    return deep_merge(system_train(train), (train.get("rows") or {}).get(row) or {})


def system_train(train: dict) -> dict:
    """The training values of a system without its per-row overrides (the GENN pre-training
    shared by the rows of a seed reads these)."""
    return {k: v for k, v in train.items() if k != "rows"}


#: The GENN pre-training values of ``train.<system>``: one pre-training per system and seed,
#: shared by its GENN rows, so no row may set its own.
PRETRAIN_KEYS = frozenset(
    {
        "pretrain_epochs", "pretrain_lr", "pretrain_patience", "pretrain_tol", "pretrain_drops",
        "pretrain_max_seconds",
    }
)  # fmt: skip


def check_train_rows(cfg: dict) -> None:
    """Refuse a per-row training override (``train.<system>.rows.<row>``) for a row that is not
    a learned row of ``experiments.<system>``: it would change nothing, silently; so would a
    row's GENN pre-training values (one pre-training per system and seed). A system without
    table rows (absent or empty: not run) is not checked."""
    experiments = cfg.get("experiments") or {}
    for system, train in (cfg.get("train") or {}).items():
        if not experiments.get(system):
            continue
        learned = [r for r in experiments[system] if not r.startswith("none-")]
        for row, values in ((train or {}).get("rows") or {}).items():
            if row not in learned:
                raise ConfigError(
                    f"train.{system}.rows.{row}: not a learned row of experiments.{system} "
                    f"({', '.join(learned) or 'none'})"
                )
            shared = sorted(set(values or {}) & PRETRAIN_KEYS)
            if shared:
                raise ConfigError(
                    f"train.{system}.rows.{row}: {shared} cannot differ by row: the GENN "
                    f"pre-training is shared by the rows of a seed; set train.{system}.{shared[0]}"
                )


def drop_absent_figure_rows(cfg: dict, systems: dict[str, str]) -> list[str]:
    """Drop the figure entries (``figures.<fig>``, label: row) whose row is not a table row of
    the figure's system (``experiments.<system>``; ``systems`` maps each figure to its system),
    so that a subset of rows runs from the command line; returns one line per entry dropped.
    A figure left without entries is not drawn. Figures of a system without table rows are
    not drawn either and not checked."""
    experiments = cfg.get("experiments") or {}
    dropped = []
    for fig, rows in (cfg.get("figures") or {}).items():
        system = systems.get(fig)
        if not experiments.get(system):
            continue
        for label, row in list((rows or {}).items()):
            if row not in experiments[system]:
                del rows[label]
                dropped.append(
                    f"figures.{fig}: {label!r} ({row}) left out: not a row of experiments.{system}"
                )
    return dropped


def schema_error(err, where: str) -> str:
    """A one-line message for a jsonschema ``ValidationError``: the key's path, what is wrong,
    and for an unknown key the keys expected there (not the whole schema and config)."""
    path = ".".join(str(p) for p in err.absolute_path) or "top level"
    message = err.message if len(err.message) <= 300 else err.message[:300] + " ..."
    msg = f"config {where}: {path}: {message}"
    expected = err.schema.get("properties") if isinstance(err.schema, dict) else None
    if err.validator == "additionalProperties" and isinstance(expected, dict):
        unknown = (
            sorted(set(err.instance) - set(expected)) if isinstance(err.instance, dict) else []
        )
        near = [difflib.get_close_matches(str(k), list(expected), n=1) for k in unknown]
        hints = [f"did you mean {m[0]!r} for {k!r}?" for k, m in zip(unknown, near) if m]
        if hints:
            msg += "; " + " ".join(hints)
        msg += f"; expected keys: {', '.join(sorted(expected))}"
    return msg + " (schema: workflow/schemas/config.schema.yaml)"


def validate_schema(cfg: dict, schema_path: str | Path, where: str) -> None:
    """Check a resolved config ``cfg`` against the workflow's JSON schema (every key known,
    types, ranges), failing with ``schema_error``'s one line: for the command line, which runs
    without Snakemake and may read a config of one's own, so the top-level sections are not
    required and the preset may have any name."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    schema.pop("required", None)
    schema["properties"]["preset"] = {"type": "string"}
    errors = jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    err = jsonschema.exceptions.best_match(errors)
    if err is not None:
        raise ConfigError(schema_error(err, where))


def canonical(v):
    """``v`` with every dict's keys sorted (recursively; lists keep their order), so that a
    change of key order alone does not change a rule's params."""
    if isinstance(v, dict):
        return {k: canonical(v[k]) for k in sorted(v, key=str)}
    if isinstance(v, list):
        return [canonical(x) for x in v]
    return v
