# The two front-door commands are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: help venv demo demo-cluster lint docs test test-py test-js test-browser browser-deps redis-deps ts-deps bench soak clean

help:
	@echo "make demo   - set up and run the demo todo app on http://$(HOST):$(PORT)"
	@echo "make demo-cluster - the demo on 3 gunicorn workers sharing a Redis"
	@echo "make lint   - ruff (ruff.toml) and mypy (setup.cfg; strict for protocol/ and client/)"
	@echo "make docs   - the documentation site (Sphinx) into docs/_build/html; warnings are errors"
	@echo "make test   - make lint and make docs, then every test (Python, node --test, headless Chromium, tsc)"
	@echo "make bench  - run the benchmarks against the peers"
	@echo "make soak   - the soak and the abuse scenarios (127.0.0.1, about 2 minutes)"

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,gunicorn,lint,docs]'
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
# msgpack browser test, installed into an ignored folder.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -d tests/js/node_modules/@msgpack/msgpack || \
	  (cd tests/js && npm install --silent --no-audit --no-fund --no-save @msgpack/msgpack@3 >/dev/null)

# Debian's redis-server for the scale-out tests (they start their own on free ports).
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# TypeScript, for the check of flask_sente/static/sente.d.ts (tests/ts), into an ignored folder.
ts-deps:
	@test -x tests/ts/node_modules/.bin/tsc || \
	  (cd tests/ts && npm install --silent --no-audit --no-fund --no-save typescript@5 >/dev/null)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# -W --keep-going: every warning is an error, all of them reported in one run; -n: every
# cross-reference must resolve. A fresh build each time (-E), so no stale page hides one.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -n -E -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

test: lint docs $(STAMP) browser-deps redis-deps ts-deps
	node --test tests/js/
	$(PY) -m pytest tests

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $(BENCH_STAMP)

# The peers (Flask-SocketIO, python-socketio on uvicorn) and the Node.js load clients are
# installed here only, never by make test.
bench: $(STAMP) $(BENCH_STAMP)
	@test -f bench/node_modules/ws/package.json && test -f bench/node_modules/socket.io-client/package.json || \
	  (cd bench && npm install --silent --no-audit --no-fund --no-save ws@8 socket.io-client@4 >/dev/null)
	ulimit -n 65536 2>/dev/null || true; $(PY) -m bench

# Not part of make test: server processes of its own, figures only (docs/soak.md).
soak: $(STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) tests/js/node_modules tests/ts/node_modules bench/node_modules docs/_build
