# The two front-door commands are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000
# Exact versions of everything the project's own commands install (make lock makes it).
LOCK   := constraints.txt
# The extras make lock resolves (every target's), and those make test installs.
LOCK_EXTRAS := test,gunicorn,lint,docs,redis,metrics
TEST_EXTRAS := test,gunicorn,lint,docs
PIP_LOCKED   = $(1)/bin/python -m pip install -q -c $(LOCK)

.PHONY: help venv demo demo-cluster lint docs test test-py test-js test-browser browser-deps \
        redis-deps ts-deps nginx-deps js-deps bench soak chaos clean lock test-min test-latest

help:
	@echo "make demo   - set up and run the demo todo app on http://$(HOST):$(PORT)"
	@echo "make demo-cluster - the demo on 3 gunicorn workers sharing a Redis"
	@echo "make lint   - ruff (ruff.toml) and mypy (setup.cfg; strict for protocol/ and client/)"
	@echo "make docs   - the documentation site (Sphinx) into docs/_build/html; warnings are errors"
	@echo "make test   - make lint and make docs, then every test (Python, node --test, headless Chromium, tsc)"
	@echo "make bench  - run the benchmarks against the peers"
	@echo "make soak   - the soak and the abuse scenarios (127.0.0.1, about 2 minutes)"
	@echo "make chaos  - the chaos drill: gunicorn -w 3 + Redis + faults, 10 min (MODE=short: ~90 s; SEED=, DURATION=)"
	@echo "make lock   - re-resolve $(LOCK) and the npm package-lock.json files in clean environments"
	@echo "make test-min    - the core, server and client suites with the lowest versions setup.cfg allows"
	@echo "make test-latest - every Python and node test with the newest versions setup.cfg allows"

venv: $(STAMP)

# pip, setuptools and wheel first, at the lock's versions; the project is then built with
# them (no build isolation: an isolated build would fetch the newest setuptools).
$(STAMP): setup.cfg setup.py $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call PIP_LOCKED,$(VENV)) pip setuptools wheel
	$(call PIP_LOCKED,$(VENV)) --no-build-isolation -e '.[$(TEST_EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo --host $(HOST) --port $(PORT)

# The demo on three gunicorn workers sharing a Redis (started here on REDIS_PORT, in
# memory only, and stopped with the demo).
REDIS_PORT ?= 6390
demo-cluster: $(STAMP) redis-deps
	@redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no \
	  --loglevel warning & redis=$$!; trap "kill $$redis 2>/dev/null" EXIT INT TERM; \
	  FLASK_SENTE_BACKPLANE=redis://127.0.0.1:$(REDIS_PORT)/0 $(VENV)/bin/gunicorn \
	  -k flask_sente.worker.SenteWorker -w 3 -b $(HOST):$(PORT) 'demo.app:create_app()'

# Debian's chromium (no browser download is possible here) and the npm codec used by the
# msgpack browser test (tests/js/package-lock.json), installed into an ignored folder.
browser-deps: js-deps
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# npm ci: exactly what package-lock.json says (a stamp per folder, remade when the lock moves).
js-deps: tests/js/node_modules/.installed
ts-deps: tests/ts/node_modules/.installed
%/node_modules/.installed: %/package-lock.json %/package.json
	cd $* && npm ci --silent --no-audit --no-fund >/dev/null
	touch $@

# Debian's redis-server for the scale-out tests (they start their own on free ports, as
# plain servers, replicas, Sentinels and Cluster nodes; redis-cli creates the Cluster).
redis-deps:
	@command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || { \
	  echo "installing Debian redis-server and redis-tools"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }

# Debian's nginx for the deployment tests (they run docs/deployment/nginx.conf themselves,
# as the current user, on free ports).
nginx-deps:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  echo "installing Debian nginx"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# -W --keep-going: every warning is an error, all of them reported in one run; -n: every
# cross-reference must resolve. A fresh build each time (-E), so no stale page hides one.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -n -E -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

test: lint docs $(STAMP) browser-deps redis-deps ts-deps nginx-deps
	node --test tests/js/
	$(PY) -m pytest tests

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt $(LOCK)
	$(call PIP_LOCKED,$(VENV)) -r bench/requirements.txt
	touch $(BENCH_STAMP)

# The peers (Flask-SocketIO, python-socketio on uvicorn) and the Node.js load clients are
# installed here only, never by make test. bench.calls: server -> client calls against
# Flask-SocketIO's call(), one process and across gunicorn workers (its own redis-server).
bench: $(STAMP) $(BENCH_STAMP) bench/node_modules/.installed redis-deps
	ulimit -n 65536 2>/dev/null || true; $(PY) -m bench
	$(PY) -m bench.calls

# Not part of make test: server processes of its own, figures only (docs/soak.md).
soak: $(STAMP)
	$(PY) -m bench.soak

# The chaos drill (docs/chaos.md): gunicorn -w 3 with Redis behind a cutting proxy, Python
# clients and sente.js in Chromium, faults at random; exits non-zero on any violation.
# MODE=long (default): 10 minutes of faults from a random seed (printed: SEED= replays it);
# MODE=short: the ~90 s run with seed 24 that make test runs (tests/scaleout/test_chaos.py).
# DURATION= seconds of faults. Not part of make test in its long form.
MODE ?= long
SEED ?=
DURATION ?=
chaos: $(STAMP) redis-deps
	@command -v chromium >/dev/null 2>&1 || $(MAKE) browser-deps
	$(PY) -m bench.chaos --mode $(MODE) $(if $(SEED),--seed $(SEED)) \
	  $(if $(DURATION),--duration $(DURATION))

clean:
	rm -rf $(VENV) .venv-min .venv-latest .venv-lock-* tests/js/node_modules tests/ts/node_modules \
	  bench/node_modules docs/_build

# --- versions ----------------------------------------------------------------------------
# make lock: resolve every extra and the benchmark's peers afresh, in a clean venv on each
# Python found (python3, and 3.10 when present; the benchmark's peers on python3 only: they
# are measured there), and write the exact versions to $(LOCK)
# (.ci/lock.py merges them, with a marker where a Python needs another version); the npm
# locks are re-resolved from their package.json. Commit the result only after make test
# (and make bench, if its peers moved) passed on it.
lock:
	@set -e; pythons=""; for py in $(PYTHON) $(PYTHON_MIN); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  case " $$pythons " in *" $$v "*) continue;; esac; pythons="$$pythons $$v"; \
	  echo "resolving on Python $$v"; rm -rf .venv-lock-$$v && $$py -m venv .venv-lock-$$v; \
	  .venv-lock-$$v/bin/python -m pip install -q --upgrade pip setuptools wheel; \
	  bench="-r bench/requirements.txt"; [ "$$pythons" = " $$v" ] || bench=""; \
	  .venv-lock-$$v/bin/python -m pip install -q --no-build-isolation -e '.[$(LOCK_EXTRAS)]' $$bench; \
	  .venv-lock-$$v/bin/python -m pip freeze --all --exclude-editable > .venv-lock-$$v.txt; \
	  rm -rf .venv-lock-$$v; done; \
	$(PYTHON) .ci/lock.py $$(for v in $$pythons; do echo "$$v=.venv-lock-$$v.txt"; done) > $(LOCK); \
	rm -f .venv-lock-*.txt
	for d in tests/js tests/ts bench; do \
	  (cd $$d && rm -f package-lock.json && npm install --package-lock-only --no-audit --no-fund --silent) || exit 1; done

# make test-min: the library's lower bounds, on the lowest Python the machine has (3.10 when
# present). The direct requirements are pinned to the bounds setup.cfg names; what they
# pull in resolves as a user's pip would resolve it.
PYTHON_MIN ?= $(shell for p in python3.10 $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3 $(PYTHON); do \
                $$p -c 'import sys' >/dev/null 2>&1 && { echo $$p; break; }; done)
MIN_SUITES := tests/core tests/protocol tests/server tests/client tests/transports tests/test_ext.py
test-min: redis-deps
	rm -rf .venv-min && $(PYTHON_MIN) -m venv .venv-min
	.venv-min/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(PYTHON) .ci/lower_bounds.py setup.cfg test,gunicorn,redis,metrics > .venv-min/lower-bounds.txt
	.venv-min/bin/python -m pip install -q -c .venv-min/lower-bounds.txt --no-build-isolation \
	  -e '.[test,gunicorn,redis,metrics]'
	.venv-min/bin/python -m pip freeze --exclude-editable > .venv-min/installed.txt
	.venv-min/bin/python -m pytest $(MIN_SUITES)

# make test-latest: the newest versions the ranges allow, of everything (no lock).
test-latest: browser-deps redis-deps ts-deps nginx-deps
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip setuptools wheel
	.venv-latest/bin/python -m pip install -q --upgrade --no-build-isolation -e '.[$(LOCK_EXTRAS)]'
	.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/installed.txt
	node --test tests/js/
	.venv-latest/bin/python -m pytest tests
