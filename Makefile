# The two commands: `make dev` runs the whole system, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test bench install clean lab system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/wrangler dev

test: $(STAMP) system
	$(BIN)/python -m pytest -q

# iproute2 (ip, tc) for the network-fault tests' namespaced hosts: installed when root and missing
system:
	@command -v ip >/dev/null && command -v tc >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null); } || \
	  echo "iproute2 is missing and this is not root: the network-fault tests will be skipped"

# the shop on three namespaced hosts with their own addresses (root), until Ctrl-C
lab: $(STAMP) system
	$(BIN)/python -m tests.lab_shop

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .wrangler .pytest_cache .hypothesis
