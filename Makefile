# The two set-up commands: `make run` (a short real campaign) and `make test`.
# Both create .venv on first use. torch is pinned to the CPU wheel this machine
# kind carries on disk; on a GPU box install the torch you want first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/archlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

.PHONY: install run test
install: $(BIN)/archlab

run: install
	$(BIN)/archlab run

test: install
	$(BIN)/python -m pytest -q -ra --durations=15
