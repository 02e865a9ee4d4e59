# Herald — the commands people run. Only Python 3.11+ is assumed; everything else is
# installed into .venv by the targets themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA_DIR := $(or $(HERALD_DATA_DIR),.herald)
STAMP  := $(VENV)/.installed

.PHONY: help venv run cluster test lint format bench bench-components soak soak-ci clean fuzz fuzz-api fuzz-parsers fuzz-parsers-ci test-browser screenshots

help:
	@echo "make run    - create .venv, initialise .herald on first use, serve HTTPS on :8443"
	@echo "make cluster - three nodes on :8443-8445 against HERALD_DATABASE_URL / HERALD_REDIS_URL"
	@echo "make test   - run the test suite (PostgreSQL tests skip when it is unreachable)"
	@echo "make test-browser - the console and inbox browser tests only (system Chromium)"
	@echo "make screenshots  - PNGs of the console pages and the inbox into docs/screenshots"
	@echo "make lint   - ruff + mypy (strict)"
	@echo "make bench  - the performance suite vs peers (~8 min; BENCH_ARGS=--quick: ~3 min)"
	@echo "make bench-components - the component benchmarks (bench.cluster needs PostgreSQL + Redis)"
	@echo "make fuzz   - the long fuzzing profile: API fuzzing (schemathesis) + parser fuzzers"
	@echo "make fuzz-api     - schemathesis, FUZZ_EXAMPLES (200) random examples per operation and mode"
	@echo "make fuzz-parsers - atheris parser fuzzers, FUZZ_SECONDS (60) per target"
	@echo "make soak   - 5,000 WebSocket subscribers, 10 minutes: fails on RSS growth, loss or loop lag"
	@echo "make soak-ci - the same for 60 seconds (about 2 minutes in all)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Herald needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# The fuzz extra (atheris) on top of the test extra; a stamp of its own, as atheris has
# wheels for a few CPython versions only and `make test` must not need it.
FUZZ_STAMP := $(VENV)/.installed-fuzz

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	@touch $(FUZZ_STAMP)

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

# Browser tests (tests/console, also part of `make test`): Playwright drives the system
# Chromium (apt-get install chromium, or HERALD_CHROMIUM=<path>); no browser is downloaded.
# Without Chromium they skip, or fail under HERALD_REQUIRE_SERVICES=1.
test-browser: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/console $(PYTEST_ARGS)

# PNGs of the console's main pages at 1280 px (dashboard and inbox also at 390 px), saved by
# the browser tests; a missing Chromium fails instead of producing nothing.
SCREENSHOT_DIR ?= docs/screenshots

screenshots: $(STAMP)
	HERALD_SCREENSHOT_DIR=$(SCREENSHOT_DIR) HERALD_REQUIRE_SERVICES=1 \
		$(BIN)/pytest -p no:cacheprovider tests/console $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzzing
	$(BIN)/ruff format --check src tests bench fuzzing
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench fuzzing
	$(BIN)/ruff check --fix src tests bench fuzzing

# The performance suite (bench/suite.py): publish-single, publish-batch, latency, fan-out and
# connections against python-socketio and Mosquitto, the pipeline breakdown; ~8 minutes, one
# table of targets vs figures. The bench extra brings the peers' Python clients and py-spy;
# bench.fanout installs Mosquitto from Debian when it is missing and we are root.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

# The component benchmarks of earlier issues (each prints its own table; see bench/README.md).
bench-components: $(BENCH_STAMP)
	$(BIN)/python -m bench.publish_deliver
	$(BIN)/python -m bench.encryption
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.cluster

# Coverage-guided parser fuzzers (fuzzing/README.md): each target in its own process, a
# failing input kept under fuzzing/crashes/. The CI profile fuzzes each target 10 s, two at
# a time: about 90 s in all.
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 2

# API fuzzing (tests/api/test_api_fuzz.py): the suite runs it with 12 fixed examples per
# operation and mode; this is the long profile, with fresh random examples on every run.
FUZZ_EXAMPLES ?= 200

fuzz: fuzz-api fuzz-parsers

fuzz-api: $(STAMP)
	HERALD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HERALD_FUZZ_RANDOM=1 $(BIN)/pytest -p no:cacheprovider \
		-n $(PYTEST_WORKERS) --dist load tests/api/test_api_fuzz.py $(PYTEST_ARGS)

fuzz-parsers: $(FUZZ_STAMP)
	$(BIN)/python -m fuzzing.run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

fuzz-parsers-ci: $(FUZZ_STAMP)
	$(BIN)/python -m fuzzing.run --seconds 10 --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

# 5,000 subscribers on 50 topics, 20 msg/s; samples RSS, fds, queues and event-loop lag every
# 10 s into bench/results/soak-*.csv/.png/.json and exits 1 on a failed criterion (see
# bench/README.md). SOAK_ARGS adds options (e.g. --rate 30).
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration 600 --subscribers 5000 $(SOAK_ARGS)

soak-ci: $(STAMP)
	$(BIN)/python -m bench.soak --duration 60 --subscribers 5000 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist src/*.egg-info
