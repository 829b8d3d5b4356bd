"""The command line runs every stage from a config file (tiny L63 preset)."""

import json

import pandas as pd
import pytest
import xarray as xr
import yaml

from fourdvarnet.cli import load_config, main


@pytest.fixture
def config_file(tmp_path, l63_cfg, small):
    raw = {
        "preset": "tiny",
        "data": {"l63": dict(l63_cfg, n_train=64, n_val=16, n_test=8)},
        "model": {"l63": small.model},
        "train": {"l63": dict(small.train, epochs=1)},
        "evaluate": {"l63": small.eval},
        "presets": {"tiny": {"data": {"l63": {"seed": 4}}}, "other": {}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_load_config_applies_the_preset(config_file):
    cfg = load_config(config_file)
    assert cfg["data"]["l63"]["seed"] == 4 and "presets" not in cfg
    assert load_config(config_file, "other")["data"]["l63"]["seed"] == 11
    with pytest.raises(ValueError, match="nope"):
        load_config(config_file, "nope")


def test_cli_end_to_end(config_file, tmp_path, keep_logging):
    common = ["--config", str(config_file), "--log", str(tmp_path / "log.txt")]
    data = tmp_path / "data"
    main([*common, "simulate", "--system", "l63", "--out-dir", str(data)])
    for split in ("train", "val", "test"):
        ds = xr.load_dataset(data / f"l63_{split}.nc")
        assert ds.attrs["seed"] == 4  # the preset's value
    ckpt = tmp_path / "m.pt"
    row = ["--system", "l63", "--row", "supervised-rk4-conv", "--seed", "0"]
    main([*common, "train", *row, "--data-dir", str(data), "--out", str(ckpt)])
    assert ckpt.exists()
    scores = tmp_path / "scores.json"
    main(
        [
            *common,
            "evaluate",
            *row,
            "--data-dir",
            str(data),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "recon.nc"),
            "--scores",
            str(scores),
        ]
    )
    s = json.loads(scores.read_text())
    assert s["experiment"] == "l63/supervised-rk4-conv/seed0" and s["r_score"] > 0
    out = tmp_path / "table1.csv"
    main(["table", "--system", "l63", "--scores", str(scores), "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table["row"]) == ["supervised-rk4-conv"]
    assert table["r_score_mean"].iloc[0] == pytest.approx(s["r_score"], rel=1e-3)


def test_cli_unknown_system(config_file, tmp_path, keep_logging):
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                str(config_file),
                "simulate",
                "--system",
                "l42",
                "--out-dir",
                str(tmp_path / "d"),
            ]
        )
    assert not (tmp_path / "d").exists()


def test_help_imports_neither_torch_nor_the_pipeline():
    """``fourdvarnet --help`` answers at once: the heavy modules load inside the commands."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fourdvarnet.cli as cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'fourdvarnet.pipeline') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: fourdvarnet" in out
    assert out.strip().endswith("[]"), out


def test_log_gets_the_traceback_and_stderr_still_gets_the_log(tmp_path, keep_logging, capfd):
    cut = tmp_path / "cut.json"
    cut.write_text('{"r_score": 1.0, "sys')
    log = tmp_path / "log.txt"
    args = ["--log", str(log), "table", "--system", "l63", "--scores", str(cut)]
    with pytest.raises(ValueError, match="cut.json"):
        main([*args, "--out", str(tmp_path / "t.csv")])
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "not valid JSON" in text
    assert "not valid JSON" in capfd.readouterr().err  # --log adds the file, keeps the console
