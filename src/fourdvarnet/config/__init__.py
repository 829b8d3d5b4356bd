"""Typed configuration of the pipeline stages, checked before any work starts.

Each stage reads one sub-tree of the workflow's ``config.yaml`` (``data.<system>``,
``model.<system>``, ``train.<system>``, ``evaluate.<system>``). ``from_dict`` refuses unknown keys
and out-of-range values with an error that names the key, so a typo never silently falls back to
a default.

Every name is importable from here (``from .config import X``); the modules hold:

- ``base``: ``ConfigError``, the range check, ``as_dict``;
- ``data``, ``model``, ``train``, ``evaluate``: the dataclass of each section and its vocabulary;
- ``experiment``: one table row (``Experiment``) and the names of priors, schemes and solvers;
- ``build``: ``from_dict``, ``train_config``, ``stages``;
- ``presets``: the whole config: presets merged, per-row training values, checks across
  sections, schema messages, canonical params.

Snakemake's command line is read by ``fourdvarnet.workflow_config``, the workflow's adapter.
"""

from .base import ConfigError, as_dict
from .build import from_dict, stages, train_config
from .data import DataConfig, ObsConfig
from .evaluate import BayesConfig, EnksConfig, EvalConfig, FsgdConfig, LbfgsConfig
from .experiment import PRIORS, SCHEMES, SOLVERS, Experiment
from .model import GRAD_NORMS, UPSAMPLE, DirectConfig, GennConfig, ModelConfig
from .presets import (
    canonical,
    check_train_rows,
    deep_merge,
    drop_absent_figure_rows,
    resolve_preset,
    row_train,
    schema_error,
    system_train,
    validate_schema,
)
from .train import DECAYS, LAMBDA_PARAMS, Stage, TrainConfig

__all__ = [
    "BayesConfig",
    "ConfigError",
    "DECAYS",
    "DataConfig",
    "DirectConfig",
    "EnksConfig",
    "EvalConfig",
    "Experiment",
    "FsgdConfig",
    "GRAD_NORMS",
    "GennConfig",
    "LAMBDA_PARAMS",
    "LbfgsConfig",
    "ModelConfig",
    "ObsConfig",
    "PRIORS",
    "SCHEMES",
    "SOLVERS",
    "Stage",
    "TrainConfig",
    "UPSAMPLE",
    "as_dict",
    "canonical",
    "check_train_rows",
    "deep_merge",
    "drop_absent_figure_rows",
    "from_dict",
    "resolve_preset",
    "row_train",
    "schema_error",
    "validate_schema",
    "stages",
    "system_train",
    "train_config",
]
