# Two commands do everything, set-up included (Python >= 3.10):
#   make quick   # the quick preset: both tables and all figures on a CPU, in minutes
#   make test    # the test suite
# The virtual environment lives in .venv. Which torch build pip installs:
#   TORCH=<requirement>  exactly that (e.g. TORCH=torch==2.13.0), from pip's usual indexes;
#   else, with an NVIDIA GPU (nvidia-smi works): PyPI's default build, CUDA included (~6 GB);
#   else the CPU build (~750 MB) from TORCH_INDEX, an extra index beside PyPI (its +cpu wheel
#   outranks PyPI's of the same version; if it cannot be reached, pip warns and takes PyPI's
#   default build); TORCH_INDEX= (empty) for PyPI's default build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?=
TORCH_DEFAULT := torch>=2.3
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quick paper test lint

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
	else \
	    echo "make: no NVIDIA GPU (nvidia-smi absent or failing): installing" \
	        $(if $(TORCH_INDEX),"the CPU build of torch (~750 MB, not the ~6 GB CUDA build)" \
	        "from the extra index $(TORCH_INDEX).","PyPI's default torch build (TORCH_INDEX=).") \
	        "Choose with TORCH=<requirement> (e.g. TORCH=torch==2.13.0) or TORCH_INDEX=<url>"; \
	    $(BIN)/pip install -q "$(TORCH_DEFAULT)" \
	        $(if $(TORCH_INDEX),--extra-index-url "$(TORCH_INDEX)"); \
	fi
	$(BIN)/pip install -q -e ".[workflow,dev]"
	touch $(STAMP)

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
