# Herald — the commands people run. Only Python 3.11+ is assumed; everything else is
# installed into .venv by the targets themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA_DIR := $(or $(HERALD_DATA_DIR),.herald)
STAMP  := $(VENV)/.installed

.PHONY: help venv run cluster test lint format bench soak soak-ci clean

help:
	@echo "make run    - create .venv, initialise .herald on first use, serve HTTPS on :8443"
	@echo "make cluster - three nodes on :8443-8445 against HERALD_DATABASE_URL / HERALD_REDIS_URL"
	@echo "make test   - run the test suite (PostgreSQL tests skip when it is unreachable)"
	@echo "make lint   - ruff + mypy (strict)"
	@echo "make bench  - the benchmarks (prints figures; bench.cluster needs PostgreSQL + Redis)"
	@echo "make soak   - 5,000 WebSocket subscribers, 10 minutes: fails on RSS growth, loss or loop lag"
	@echo "make soak-ci - the same for 60 seconds (about 2 minutes in all)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Herald needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@if [ ! -d "$(DATA_DIR)/tls" ]; then $(BIN)/herald init; fi
	@$(BIN)/herald serve --banner

# Three nodes of one data dir on ports 8443-8445, sharing the configured PostgreSQL and
# Redis (both must be set); the CLI checks them, initialises the data dir and stops every
# node on Ctrl-C.
cluster: $(STAMP)
	@$(BIN)/herald cluster run --nodes 3 --base-port 8443

# Two workers, one test file each at a time (module fixtures, e.g. a server, stay in one
# process): about half the wall time of a serial run on two cores. PYTEST_WORKERS=0 runs
# everything in this process (for a debugger).
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.publish_deliver $(BENCH_ARGS)
	$(BIN)/python -m bench.publish_security
	$(BIN)/python -m bench.encryption
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.cluster

# 5,000 subscribers on 50 topics, 20 msg/s; samples RSS, fds, queues and event-loop lag every
# 10 s into bench/results/soak-*.csv/.png/.json and exits 1 on a failed criterion (see
# bench/README.md). SOAK_ARGS adds options (e.g. --rate 30).
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration 600 --subscribers 5000 $(SOAK_ARGS)

soak-ci: $(STAMP)
	$(BIN)/python -m bench.soak --duration 60 --subscribers 5000 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist src/*.egg-info
