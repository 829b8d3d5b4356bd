"""The user's values over the preset, --config values read as YAML, canonical params and short
schema errors (what workflow/rules/common.smk does with the configuration)."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from fourdvarnet.config import (
    ConfigError,
    canonical,
    check_train_rows,
    deep_merge,
    drop_absent_figure_rows,
    resolve_preset,
    row_train,
    schema_error,
)
from fourdvarnet.workflow_config import parse_command_line, user_config

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def snakemake_config(user: dict) -> dict:
    """``config`` as Snakemake hands it over: config.yaml updated with the user's values."""
    return deep_merge(base(), user)


def test_a_user_value_wins_over_the_preset_key_by_key():
    quick = base()["presets"]["quick"]["train"]["l63"]
    user = {"preset": "quick", "train": {"l63": {"epochs": quick["epochs"] + 7}}}
    cfg = resolve_preset(snakemake_config(user), overrides=user)
    assert cfg["train"]["l63"]["epochs"] == quick["epochs"] + 7  # the user's value
    assert cfg["train"]["l63"]["batch_size"] == quick["batch_size"]  # the preset's, kept
    assert cfg["train"]["l63"]["schedule"] == quick["schedule"]
    assert "presets" not in cfg
    # Without overrides the preset wins, as before.
    assert resolve_preset(snakemake_config(user))["train"]["l63"]["epochs"] == quick["epochs"]


def test_command_line_strings_are_read_as_yaml():
    # What Snakemake makes of --config preset=quick 'seeds=[0,1]' 'train={l63: {...}}'
    cli = {
        "preset": "quick",
        "seeds": ["0", "1"],
        "train": {
            "l63": {
                "epochs": "3",
                "learn_lambdas": "false",
                "schedule": [{"epoch": "0", "n_iter": "5", "lr": "1e-3"}],
                "device": "cpu",
            }
        },
        "experiments": {"l63": ["none-rk4-fsgd"]},
    }
    got = parse_command_line(cli)
    assert got["preset"] == "quick" and got["seeds"] == [0, 1]
    t = got["train"]["l63"]
    assert t["epochs"] == 3 and t["learn_lambdas"] is False and t["device"] == "cpu"
    assert t["schedule"] == [{"epoch": 0, "n_iter": 5, "lr": 1e-3}]
    assert got["experiments"] == {"l63": ["none-rk4-fsgd"]}


def test_user_config_merges_configfiles_and_the_parsed_command_line():
    immutables = pytest.importorskip("immutables")  # Snakemake passes --config as a Map
    from_files_and_cli = {"seeds": ["0"], "train": {"l63": {"epochs": "2", "batch_size": 8}}}
    cli = immutables.Map({"seeds": ["0"], "train": {"l63": {"epochs": "2"}}})
    user = user_config(immutables.Map(from_files_and_cli), cli)
    assert user == {"seeds": [0], "train": {"l63": {"epochs": 2, "batch_size": 8}}}
    cfg = resolve_preset(snakemake_config(dict(user, preset="ci")), overrides=user)
    assert cfg["train"]["l63"]["epochs"] == 2 and cfg["train"]["l63"]["batch_size"] == 8


def test_canonical_params_do_not_depend_on_key_order():
    a = {"b": 1, "a": {"y": [{"q": 1, "p": 2}], "x": 0}}
    b = {"a": {"x": 0, "y": [{"p": 2, "q": 1}]}, "b": 1}
    assert repr(canonical(a)) == repr(canonical(b))  # Snakemake compares params by repr
    assert canonical([3, 1, 2]) == [3, 1, 2]  # lists keep their order


def test_an_unknown_key_is_named_in_one_short_line():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for bad, key in [
        (dict(base(), foo=1), "foo"),
        (deep_merge(base(), {"train": {"l63": {"epoch": 3}}}), "epoch"),
        # a per-row override is checked like the system's values, and its row name too
        (
            deep_merge(base(), {"train": {"l63": {"rows": {"supervised-rk4-conv": {"epoch": 3}}}}}),
            "epoch",
        ),
        (
            deep_merge(base(), {"train": {"l63": {"rows": {"supervised-rk4-cnn": {"epochs": 3}}}}}),
            "supervised-rk4-cnn",
        ),
    ]:
        with pytest.raises(jsonschema.ValidationError) as info:
            jsonschema.validate(bad, schema)
        msg = schema_error(info.value, "as given")
        assert key in msg and "\n" not in msg and len(msg) < 600, msg


def test_figure_entries_of_absent_rows_are_dropped_with_one_line_each():
    systems = {"fig2": "l63", "fig3": "l63", "fig4": "l96"}
    for preset in ("paper", "quick", "ci", "cpu"):  # the presets' figures name their rows
        assert drop_absent_figure_rows(resolve_preset(dict(base(), preset=preset)), systems) == []
    cfg = resolve_preset(base())
    cfg["experiments"]["l63"].remove("none-rk4-bayes")
    fig3 = dict(cfg["figures"]["fig3"])
    dropped = drop_absent_figure_rows(cfg, systems)
    assert dropped == [
        "figures.fig3: 'Bayes posterior mean' (none-rk4-bayes) left out: not a row of "
        "experiments.l63"
    ]
    del fig3["Bayes posterior mean"]
    assert cfg["figures"]["fig3"] == fig3
    del cfg["experiments"]["l63"]  # no L63 table: its figures are not drawn, nor checked
    assert drop_absent_figure_rows(cfg, systems) == []


def test_a_row_override_changes_that_row_only():
    train = {
        "epochs": 10,
        "pretrain_epochs": 5,
        "schedule": [{"epoch": 0, "n_iter": 5, "lr": 1e-3}],
        "rows": {
            "supervised-genn-conv": {
                "epochs": 4,
                "schedule": [{"epoch": 0, "n_iter": 20, "lr": 1e-4}],
            }
        },
    }
    genn = row_train(train, "supervised-genn-conv")
    assert genn["epochs"] == 4 and genn["pretrain_epochs"] == 5 and "rows" not in genn
    assert genn["schedule"] == [{"epoch": 0, "n_iter": 20, "lr": 1e-4}]  # a list: replaced whole
    other = row_train(train, "supervised-rk4-conv")
    assert other == {k: v for k, v in train.items() if k != "rows"}
    assert train["rows"]["supervised-genn-conv"]["epochs"] == 4  # the input is left alone


def test_an_override_of_a_row_the_table_lacks_is_refused():
    for preset in ("paper", "quick", "ci", "cpu"):
        check_train_rows(resolve_preset(dict(base(), preset=preset)))
    cfg = resolve_preset(base())
    cfg["train"]["l63"]["rows"] = {"none-rk4-fsgd": {"epochs": 3}}  # not learned
    with pytest.raises(ConfigError, match=r"train.l63.rows.none-rk4-fsgd"):
        check_train_rows(cfg)
    cfg["train"]["l63"]["rows"] = {"supervised-euler-conv": {"epochs": 3}}  # not in the table
    with pytest.raises(ConfigError, match=r"supervised-euler-conv: not a learned row"):
        check_train_rows(cfg)
    # a system that runs no rows (the cpu preset's L96) keeps its overrides unchecked
    cfg["experiments"]["l63"] = []
    check_train_rows(cfg)


def test_the_code_defaults_are_config_yaml_values():
    """One source of defaults: every value config.yaml sets for L63 (the paper's set-up) is
    the dataclass default; the L96 values that differ are the system's own (config.yaml)."""
    from fourdvarnet.config import EvalConfig, ModelConfig, TrainConfig, as_dict

    raw = base()
    for section, cls in (("train", TrainConfig), ("model", ModelConfig), ("evaluate", EvalConfig)):
        defaults = as_dict(cls())

        def compare(default, value, key):
            if isinstance(value, dict):
                for k, v in value.items():
                    if k != "rows":  # per-row overrides are not defaults
                        compare(default[k], v, f"{key}.{k}")
            else:
                assert default == value, f"{key}: code default {default!r}, config.yaml {value!r}"

        compare(defaults, raw[section]["l63"], f"{section}.l63")


#: Every name ``fourdvarnet.config`` exported as one module (before its split into a package).
CONFIG_NAMES = (
    "PRIORS UPSAMPLE SOLVERS SCHEMES GRAD_NORMS DECAYS "
    "LAMBDA_PARAMS ConfigError from_dict as_dict ObsConfig DataConfig GennConfig DirectConfig "
    "ModelConfig Stage TrainConfig FsgdConfig LbfgsConfig EnksConfig BayesConfig EvalConfig "
    "Experiment stages train_config row_train system_train check_train_rows "
    "drop_absent_figure_rows deep_merge resolve_preset schema_error canonical"
).split()


def test_config_names_stay_importable_and_config_imports_no_higher_module():
    """``from .config import X`` keeps working for every name; the config package (and the
    workflow's adapter) import neither Snakemake nor the package's higher modules."""
    import subprocess
    import sys

    import fourdvarnet.config as config

    assert set(CONFIG_NAMES) <= set(config.__all__)
    assert all(hasattr(config, name) for name in CONFIG_NAMES)
    code = (
        "import sys, fourdvarnet.workflow_config; "
        "print(' '.join(m for m in sys.modules if m.startswith(('fourdvarnet', 'snakemake'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    allowed = {"fourdvarnet", "fourdvarnet.dynamics", "fourdvarnet.workflow_config"}
    assert {m for m in loaded if not m.startswith("fourdvarnet.config")} == allowed, loaded
