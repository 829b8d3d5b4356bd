# Two commands do everything, set-up included (Python >= 3.10):
#   make quick   # the quick preset: both tables and all figures on a CPU, in minutes
#   make test    # the test suite
# The virtual environment lives in .venv; TORCH selects the torch build pip installs.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quick paper test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
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
