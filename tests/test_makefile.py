"""Which torch build the Makefile installs: the CPU build without an NVIDIA GPU, unless told.

``make`` runs the real recipe with a stand-in ``python -m venv`` whose ``pip`` only records its
arguments (and fails, if told, for command lines naming a given index), and a stand-in
``nvidia-smi`` that succeeds (a GPU) or fails (none).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_install(
    tmp_path: Path,
    gpu: bool,
    *args: str,
    target: str = "",
    fail_for: str = "",
    ok: bool = True,
    build: str = "cpu",
) -> tuple[str, list[str]]:
    """Run the Makefile's set-up (``target``, by default the venv's stamp); returns make's output
    (stdout and stderr) and the pip command lines. The stand-in pip fails for command lines
    containing ``fail_for`` (if given); ``ok`` is whether make must succeed; ``build`` is what
    the venv's stand-in python answers for the installed torch build."""
    bin_dir, venv, log = tmp_path / "bin", tmp_path / "venv", tmp_path / "pip.log"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    fail = f'case "$*" in *{fail_for}*) exit 1;; esac\\n' if fail_for else ""
    python.write_text(
        "#!/bin/sh\n"  # python -m venv DIR
        'mkdir -p "$3/bin"\n'
        f'printf \'#!/bin/sh\\necho "$*" >> {log}\\n{fail}\' > "$3/bin/pip"\n'
        # the venv's python: scripts/torch_build.py's answer, "cpu" unless the test says
        f'printf \'#!/bin/sh\\necho "{build}"\\n\' > "$3/bin/python"\n'
        'chmod +x "$3/bin/pip" "$3/bin/python"\n'
    )
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nexit {0 if gpu else 1}\n")
    for f in (python, bin_dir / "nvidia-smi"):
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH", "TORCH_INDEX", "MAKEFLAGS")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    target = target or f"{venv}/.installed"
    done = subprocess.run(
        ["make", "-C", str(REPO), target, f"VENV={venv}", f"PYTHON={python}", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr, log.read_text().splitlines()


def torch_install(pip_lines: list[str]) -> str:
    """The pip line that installs torch itself: the one naming an index, else the only one."""
    lines = [x for x in pip_lines if "torch" in x]
    with_index = [x for x in lines if "index-url" in x]
    (line,) = with_index or lines
    return line


def test_without_a_gpu_the_cpu_build_is_installed_and_the_choice_said(tmp_path):
    out, pip = make_install(tmp_path, gpu=False)
    # The index alone (pip cannot fall back to PyPI's CUDA build), failing in seconds if it is
    # unreachable; torch's dependencies after, from pip's usual indexes.
    assert torch_install(pip) == (
        f"install -q --timeout 15 --retries 1 --no-deps --index-url {CPU_INDEX} torch>=2.3"
    )
    i = pip.index(torch_install(pip))
    assert pip[i + 1] == "install -q torch>=2.3"
    assert "no NVIDIA GPU" in out and "TORCH=" in out and "TORCH_INDEX=" in out
    assert any("-e .[workflow,dev]" in x for x in pip)


def test_an_unreachable_cpu_index_stops_with_the_choices(tmp_path):
    out, pip = make_install(tmp_path, gpu=False, fail_for=CPU_INDEX, ok=False)
    assert "could not be reached" in out
    for choice in (
        "make setup TORCH_INDEX= ",
        "make setup TORCH=torch==<version>",
        "make setup TORCH_INDEX=<url>",
    ):
        assert choice in out
    # It tried the index once, and installed no torch (nor the project) without it.
    assert [x for x in pip if "torch" in x] == [torch_install(pip)]
    assert CPU_INDEX in torch_install(pip)
    assert not any("-e .[workflow,dev]" in x for x in pip)
    assert not (tmp_path / "venv" / ".installed").exists()


def test_make_setup_installs_torch_and_the_project_and_runs_nothing(tmp_path):
    out, pip = make_install(tmp_path, False, "TORCH=torch==2.13.0", target="setup")
    assert torch_install(pip) == "install -q torch==2.13.0"
    assert pip[-1] == "install -q -e .[workflow,dev]"
    assert (tmp_path / "venv" / ".installed").exists()
    assert "snakemake --config" not in out and "-m pytest" not in out


def test_with_a_gpu_pypi_default_build(tmp_path):
    out, pip = make_install(tmp_path, gpu=True)
    assert torch_install(pip) == "install -q torch>=2.3"
    assert "NVIDIA GPU found" in out


def test_an_explicit_torch_is_used_as_is(tmp_path):
    _, pip = make_install(tmp_path, False, "TORCH=torch==2.13.0")
    assert torch_install(pip) == "install -q torch==2.13.0"


def test_torch_index_chooses_the_index(tmp_path):
    _, pip = make_install(tmp_path, False, "TORCH_INDEX=https://example.org/whl/cu128")
    assert torch_install(pip).endswith("--index-url https://example.org/whl/cu128 torch>=2.3")
    assert "--timeout 15 --retries 1" in torch_install(pip)
    _, pip = make_install(tmp_path / "x", False, "TORCH_INDEX=")
    assert torch_install(pip) == "install -q torch>=2.3"


def test_a_cuda_build_served_by_pips_own_configuration_is_refused(tmp_path):
    """An extra index in pip's configuration can serve a CUDA build where the CPU index was
    asked for: make uninstalls it before its dependencies (NVIDIA's packages) come, and stops
    with the choices."""
    out, pip = make_install(tmp_path, gpu=False, build="cuda 2.14.1+cu130", ok=False)
    assert "CUDA build of torch (cuda 2.14.1+cu130)" in out and "uninstalled" in out
    assert pip[-1] == "uninstall -q -y torch"
    assert "install -q torch>=2.3" not in pip  # its dependencies never installed
    assert not any("-e .[workflow,dev]" in x for x in pip)
    assert "make setup TORCH=torch==<version>+cpu" in out and "make setup TORCH_INDEX=" in out


@pytest.mark.parametrize(
    "version,requires,build",
    [
        ("2.13.0+cpu", ["filelock", "sympy>=1.13.3"], "cpu"),
        ("2.14.1+cu130", ["filelock"], "cuda 2.14.1+cu130"),
        ("2.14.1", ["filelock", 'nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux"'],
         "cuda 2.14.1"),
    ],
)  # fmt: skip
def test_torch_build_reads_the_installed_metadata(tmp_path, version, requires, build):
    import sys

    info = tmp_path / f"torch-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", "Name: torch", f"Version: {version}"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "torch_build.py")],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.stdout.strip() == build, done.stderr
