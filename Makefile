# The two front-door commands are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: help venv demo test test-py test-js test-browser browser-deps bench soak clean

help:
	@echo "make demo   - set up and run the demo todo app on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run every test (Python, node --test, headless Chromium)"
	@echo "make bench  - run the benchmarks against the peers"
	@echo "make soak   - the soak and the abuse scenarios (127.0.0.1, about 2 minutes)"

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,gunicorn]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo --host $(HOST) --port $(PORT)

# Debian's chromium (no browser download is possible here) and the npm codec used by the
# msgpack browser test, installed into an ignored folder.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -d tests/js/node_modules/@msgpack/msgpack || \
	  (cd tests/js && npm install --silent --no-audit --no-fund --no-save @msgpack/msgpack@3 >/dev/null)

test: $(STAMP) browser-deps
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
	rm -rf $(VENV) tests/js/node_modules bench/node_modules
