# httppush: `make demo` runs a real eKuiper with the plugin; `make test` runs every test. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: all venv package ekuiper test test-fast test-real cluster demo bench soak lint clean

all: package

# Development environment: the runtime dependencies plus pytest and ruff.
$(VENV)/.installed: requirements.txt requirements-optional.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# dist/pyhttppush.zip and dist/httppush.zip
package: venv
	$(PY) scripts/package.py

# A real eKuiper (kuiperd), built once with Go at the pinned release and cached in .cache/ekuiper/
ekuiper:
	bash scripts/get-ekuiper.sh

# Both tiers: the emulated host and the real eKuiper. Under CI=true a missing Go/eKuiper fails the run.
test: package lint
	$(PY) -m pytest

test-fast: package
	$(PY) -m pytest -m "not realhost"

test-real: package
	$(PY) -m pytest -m realhost

# Three real eKuiper nodes behind HAProxy (deploy/haproxy/haproxy.cfg), results in mosquitto: a node killed, another
# drained, upgraded and undrained (docs/scaling.md). Part of `make test` too; needs root and
# `apt-get install haproxy mosquitto mosquitto-clients` (under CI=true a missing one fails the test). 1.5-2 minutes here.
cluster: package
	$(PY) -m pytest -m cluster -s $(ARGS)

# Build everything, start eKuiper with the plugin installed, push sample data, show the rule's output.
demo: package
	$(PY) scripts/demo.py

# The benchmark (bench/README.md): needs wrk (apt-get install wrk). `make bench ARGS="--write"` stores the table.
bench: package
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/run.py $(ARGS)
	$(PY) bench/schema.py

# The soak (docs/operations.md#soak): a real eKuiper with the plugin under a mixed load for SOAK_S seconds (default
# 1800) at half the rate a short calibration reaches; fails on a lost record, RSS drift or leaked file descriptors.
soak: package
	$(PY) bench/soak.py $(ARGS)

lint: venv
	$(PY) -m ruff check httppush_plugin harness tests scripts bench main.py etc/decoders

clean:
	rm -rf dist .pytest_cache
