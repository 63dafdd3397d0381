# The two commands of the README, each doing all the set-up it needs:
#   make demo   the main job on an embedded default
#   make test   lint, types, layer contracts, the manual's strict build and the test suite
#               (what CI runs, via .ci/run)
# The virtual environment is created on first use and rebuilt when pyproject.toml or setup.py
# changes.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo
EXTRAS ?= dev,evaluators,pretrained

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# (pip's "Location ... is ignored" warnings, from some machines' pip config, are noise)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@# This environment may set PYTHONDONTWRITEBYTECODE: compile once here instead of on
	@# every import (importing torch + ray + mlflow is about 3x faster with bytecode).
	@$(BIN)/python -m compileall -q -j 0 -x 'py312_intrinsics' $(VENV)/lib > /dev/null \
		|| echo "note: a few files could not be byte-compiled (harmless)"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/san-search demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check san_search tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs build/site .pytest_cache .mypy_cache .ruff_cache
