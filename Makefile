# tracklm: `make demo` and `make test` set everything up on a fresh machine and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: demo test test-fast lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is installed first, pinned, so that the package's torch range resolves to it
# instead of pulling a multi-GB CUDA build from the registry.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tracklm demo --out demo

# The whole suite, slow tests included (about 4.5 minutes on 2 cores), one worker process per
# core (pytest-xdist; one torch thread each, tests/conftest.py); `make test-fast` skips the tests
# marked slow.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n auto

# ruff on everything; mypy on src/ (configured in pyproject.toml: strict for models/, detector/, io/).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out benchmarks/results.json

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info
