# The two commands: `make dev` runs the whole system, `make test` runs every test (on Python 3.11
# and again on 3.13, the newest Cloudflare's Python Workers run: the machines carry it under pyenv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTHON_NEXT ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) $(shell command -v python3.13))

.PHONY: dev test test-on bench install clean lab system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/wrangler dev

test: system
	$(MAKE) --no-print-directory test-on
	@[ -n "$(PYTHON_NEXT)" ] || { echo "Python 3.13 not found: set PYTHON_NEXT=/path/to/python3.13"; exit 1; }
	$(MAKE) --no-print-directory test-on PYTHON=$(PYTHON_NEXT) VENV=.venv-3.13

# the whole suite on one Python (PYTHON, in VENV)
test-on: $(STAMP)
	$(BIN)/python -m pytest -q

# iproute2 (ip, tc) for the network-fault tests' namespaced hosts, Prometheus (its server and
# promtool) for the alerting rules' tests, Chromium and its driver for the dashboard's browser
# test: installed when root and missing
system:
	@command -v ip >/dev/null && command -v tc >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null); } || \
	  echo "iproute2 is missing and this is not root: the network-fault tests will be skipped"
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null); } || \
	  echo "prometheus is missing and this is not root: install it (apt-get install prometheus) for the rules' tests"
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null); } || \
	  echo "chromium is missing and this is not root: the dashboard's browser test will be skipped"

# the shop on three namespaced hosts with their own addresses (root), until Ctrl-C
lab: $(STAMP) system
	$(BIN)/python -m tests.lab_shop

# wrk generates the HTTP benchmarks' load (installed when root and missing); npm brings workerd
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq wrk >/dev/null); } || \
	  echo "wrk is missing and this is not root: the server benchmarks will be skipped"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-3.13 .wrangler .pytest_cache .hypothesis
