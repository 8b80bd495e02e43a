# SegOps: two commands do everything on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/data/dagster
DEMO_CUSTOMERS ?= 20000
DBT := $(BIN)/dbt --no-use-colors
DBT_ARGS := --project-dir dbt_project --profiles-dir dbt_project

.PHONY: demo test lint manifest nightly install clean up chaos

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The manifest with the segments' compiled SQL, built once before anything that reads it starts
# (compiled against an in-memory database, so it needs no server).
manifest: install
	$(DBT) compile --quiet --target compile --select +path:models/segments $(DBT_ARGS)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

nightly: manifest $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/segops nightly

# The whole product once, on its own PostgreSQL (data/postgres) and lake (data/lake).
demo: manifest $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/segops demo --customers $(DEMO_CUSTOMERS)

# The live platform: emulator, PostgreSQL, two consumers, Dagster (UI on :3000) and demo
# traffic; Ctrl-C stops.
up: manifest $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/segops up --consumers 2

test: manifest
	$(BIN)/pytest -q

chaos: manifest
	SEGOPS_CHAOS_SCALE=full SEGOPS_CHAOS_RESULTS=bench/results/chaos.json \
		$(BIN)/pytest -q -m chaos -p no:cacheprovider --timeout 3600 tests/test_chaos.py

# Python by ruff; the dbt models by sqlfluff (.sqlfluff: DuckDB, lowercase, CTEs, explicit aliases).
lint: install
	$(BIN)/ruff check .
	$(BIN)/sqlfluff lint dbt_project/models

clean:
	rm -rf data dbt_project/target

# Every benchmark figure beside its limit, measured in the same run (about 40 minutes on 2 cores);
# results in bench/results/latest.json and latest.md. `python -m bench --scale small` checks the
# harness in about two minutes.
.PHONY: bench bench-large
bench: manifest
	$(BIN)/python -m bench --scale full

# B4 at 10M customers / 100M events (B4L), on its own: about 45 minutes on 2 cores, most of it
# generating the shop (some 25 GB in PostgreSQL, copied once more); merged into the results.
bench-large: manifest
	$(BIN)/python -m bench --scale full --only B4L
