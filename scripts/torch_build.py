"""Print which build of torch pip installed, from its metadata (torch itself need not import:
its dependencies may not be installed yet): ``cpu``, or ``cuda <version>`` for a build that
names CUDA in its version (``+cu130``) or depends on NVIDIA's CUDA packages (PyPI's default
Linux build). Used by the Makefile to refuse a CUDA build that nobody asked for."""

import importlib.metadata as md
import sys

try:
    dist = md.distribution("torch")
except md.PackageNotFoundError:
    sys.exit("torch is not installed")
requires = [r.lower() for r in dist.requires or []]
cuda = "+cu" in dist.version or any(r.startswith(("nvidia-", "triton")) for r in requires)
print(f"cuda {dist.version}" if cuda else "cpu")
