# Two commands do everything, set-up included (Python >= 3.10); a third only sets up:
#   make quick   # the quick preset: both tables and all figures on a CPU (about 6 min on 2 cores:
#                # reference/quick/run-info.txt)
#   make test    # the test suite
#   make setup   # the set-up alone: .venv with torch and the project, nothing run
# The virtual environment lives in .venv. Which torch build pip installs:
#   TORCH=<requirement>  exactly that (e.g. TORCH=torch==2.13.0), from pip's usual indexes;
#   else, with an NVIDIA GPU (nvidia-smi works): PyPI's default build, CUDA included (~6 GB);
#   else, TORCH_INDEX= (empty): PyPI's default build;
#   else the CPU build (~750 MB) from TORCH_INDEX (the index alone, --timeout 15 --retries 1),
#   its dependencies then from pip's usual indexes. If pip cannot install torch from TORCH_INDEX
#   (unreachable, or no wheel for this Python), make stops and prints the choices
#   (TORCH_INDEX=, TORCH=..., TORCH_INDEX=<url>) rather than take the ~6 GB CUDA build unasked.

PYTHON ?= python3
VENV ?= .venv
TORCH ?=
TORCH_DEFAULT := torch>=2.3
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# pip's network options for TORCH_INDEX: fail in seconds, not minutes, where it cannot be reached.
TORCH_INDEX_NET := --timeout 15 --retries 1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quick paper test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if [ -n "$(TORCH)" ]; then \
	    echo "$(BIN)/pip install -q \"$(TORCH)\""; \
	    $(BIN)/pip install -q "$(TORCH)"; \
	elif nvidia-smi >/dev/null 2>&1; then \
	    echo "make: NVIDIA GPU found: installing PyPI's default torch build (CUDA, ~6 GB);" \
	        "TORCH=<requirement> chooses another"; \
	    $(BIN)/pip install -q "$(TORCH_DEFAULT)"; \
	elif [ -z "$(TORCH_INDEX)" ]; then \
	    echo "make: no NVIDIA GPU; TORCH_INDEX= (empty): installing PyPI's default torch build" \
	        "(CUDA included on Linux, ~6 GB)"; \
	    $(BIN)/pip install -q "$(TORCH_DEFAULT)"; \
	else \
	    echo "make: no NVIDIA GPU (nvidia-smi absent or failing): installing the CPU build of" \
	        "torch (~750 MB, not the ~6 GB CUDA build) from the index $(TORCH_INDEX)." \
	        "Choose with TORCH=<requirement> (e.g. TORCH=torch==2.13.0) or TORCH_INDEX=<url>"; \
	    $(BIN)/pip install -q $(TORCH_INDEX_NET) --no-deps --index-url "$(TORCH_INDEX)" \
	        "$(TORCH_DEFAULT)" || { \
	        echo "make: torch could not be installed from $(TORCH_INDEX): the index could not" \
	            "be reached (or has no torch wheel for this Python). No other torch was" \
	            "installed. Choose one:" >&2; \
	        echo "  make setup TORCH_INDEX=                # PyPI's default build, CUDA included (~6 GB)" >&2; \
	        echo "  make setup TORCH=torch==<version>      # a torch you choose (e.g. from your own index; TORCH=/path/to/torch.whl for a local wheel)" >&2; \
	        echo "  make setup TORCH_INDEX=<url>           # another index that serves torch" >&2; \
	        exit 1; }; \
	    build=$$($(BIN)/python scripts/torch_build.py); \
	    if [ "$$build" != cpu ]; then \
	        $(BIN)/pip uninstall -q -y torch; \
	        echo "make: pip installed a CUDA build of torch ($$build), not the CPU build asked" \
	            "for: an index in pip's own configuration (see pip config list) served it." \
	            "It was uninstalled. Choose one:" >&2; \
	        echo "  make setup TORCH=torch==<version>+cpu  # a CPU build that your indexes serve" >&2; \
	        echo "  make setup TORCH=/path/to/torch.whl     # a local CPU wheel" >&2; \
	        echo "  make setup TORCH_INDEX=                # PyPI's default build, CUDA included (~6 GB)" >&2; \
	        exit 1; \
	    fi; \
	    $(BIN)/pip install -q "$(TORCH_DEFAULT)"; \
	fi
	$(BIN)/pip install -q -e ".[workflow,dev]"
	touch $(STAMP)

setup: $(STAMP)

quick: $(STAMP)
	$(BIN)/snakemake --config preset=quick

paper: $(STAMP)
	$(BIN)/snakemake --config preset=paper

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .
