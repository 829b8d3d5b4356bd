"""Which torch build the Makefile installs: the CPU build without an NVIDIA GPU, unless told.

``make`` runs the real recipe with a stand-in ``python -m venv`` whose ``pip`` only records its
arguments, and a stand-in ``nvidia-smi`` that succeeds (a GPU) or fails (none).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_install(tmp_path: Path, gpu: bool, *args: str) -> tuple[str, list[str]]:
    """Run the Makefile's set-up target; returns make's output and the pip command lines."""
    bin_dir, venv, log = tmp_path / "bin", tmp_path / "venv", tmp_path / "pip.log"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"  # python -m venv DIR
        'mkdir -p "$3/bin"\n'
        f'printf \'#!/bin/sh\\necho "$*" >> {log}\\n\' > "$3/bin/pip"\n'
        'chmod +x "$3/bin/pip"\n'
    )
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nexit {0 if gpu else 1}\n")
    for f in (python, bin_dir / "nvidia-smi"):
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH", "TORCH_INDEX", "MAKEFLAGS")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    out = subprocess.run(
        ["make", "-C", str(REPO), f"{venv}/.installed", f"VENV={venv}", f"PYTHON={python}", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out, log.read_text().splitlines()


def torch_install(pip_lines: list[str]) -> str:
    (line,) = [x for x in pip_lines if "torch" in x]
    return line


def test_without_a_gpu_the_cpu_build_is_installed_and_the_choice_said(tmp_path):
    out, pip = make_install(tmp_path, gpu=False)
    assert torch_install(pip) == f"install -q torch>=2.3 --extra-index-url {CPU_INDEX}"
    assert "no NVIDIA GPU" in out and "TORCH=" in out and "TORCH_INDEX=" in out
    assert any("-e .[workflow,dev]" in x for x in pip)


def test_with_a_gpu_pypi_default_build(tmp_path):
    out, pip = make_install(tmp_path, gpu=True)
    assert torch_install(pip) == "install -q torch>=2.3"
    assert "NVIDIA GPU found" in out


def test_an_explicit_torch_is_used_as_is(tmp_path):
    _, pip = make_install(tmp_path, False, "TORCH=torch==2.13.0")
    assert torch_install(pip) == "install -q torch==2.13.0"


def test_torch_index_chooses_the_index(tmp_path):
    _, pip = make_install(tmp_path, False, "TORCH_INDEX=https://example.org/whl/cu128")
    assert torch_install(pip).endswith("--extra-index-url https://example.org/whl/cu128")
    _, pip = make_install(tmp_path / "x", False, "TORCH_INDEX=")
    assert torch_install(pip) == "install -q torch>=2.3"
