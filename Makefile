# The two set-up commands of the README: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench node-tools test-lerobot

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/knack demo

# Node.js references for the IPFS tests (tests/js, see tests/ipfs_node.py): the UnixFS importer
# (seconds, 13 MB) and js-ipfs as a stand-in RPC daemon (under a minute, 290 MB). A missing
# or failing npm does not stop `make test`: those tests then skip, saying why.
NPM ?= npm
NODE_TOOLS := tests/js/importer/node_modules/.installed tests/js/ipfs/node_modules/.installed tests/js/anvil/node_modules/.installed

tests/js/%/node_modules/.installed: tests/js/%/package.json tests/js/%/package-lock.json
	@if ! command -v $(NPM) >/dev/null 2>&1; then \
		echo "npm not found: the tests that need tests/js/$* (IPFS references, a dev chain) will be skipped."; \
	elif $(NPM) ci --prefix tests/js/$* --no-audit --no-fund --loglevel=silent || \
		$(NPM) install --prefix tests/js/$* --no-save --no-audit --no-fund --loglevel=error; then \
		touch $@; \
	else \
		echo "npm could not install tests/js/$*: the tests that need it will be skipped."; \
	fi

# solc and OpenZeppelin, to check that the committed contract artifacts rebuild byte for byte.
storage/ledger/contracts/node_modules/.installed: storage/ledger/contracts/package.json storage/ledger/contracts/package-lock.json
	@if command -v $(NPM) >/dev/null 2>&1 && $(NPM) ci --prefix storage/ledger/contracts --no-audit --no-fund --loglevel=error; then \
		touch $@; \
	else \
		echo "npm ci in storage/ledger/contracts failed or npm is missing: the contract rebuild check will be skipped."; \
	fi

node-tools: $(NODE_TOOLS) storage/ledger/contracts/node_modules/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed node-tools lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/startup.py
	$(PY) bench/capture.py
	$(PY) bench/label.py
	$(PY) bench/cid.py
	$(PY) bench/gas.py
	$(PY) bench/tui.py
	$(PY) bench/robot_soak.py


# Opt-in: LeRobot's own loader reads a dataset built from the demo's paid clips, every item (lerobot and torch
# in an environment of their own, about 5 GB; lerobot 0.4 on Python 3.11, 0.6 on 3.12). Not part of `make test`.
LEROBOT_VENV ?= .venv-lerobot
LEROBOT_WORK ?= /tmp/knack-test-lerobot
$(LEROBOT_VENV)/.installed:
	$(PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LEROBOT_VENV)/bin/python -m pip install --quiet 'lerobot>=0.4.4,<0.7'
	touch $@

test-lerobot: $(VENV)/.installed $(LEROBOT_VENV)/.installed
	rm -rf $(LEROBOT_WORK)
	mkdir -p $(LEROBOT_WORK)/home
	env HOME=$(LEROBOT_WORK)/home XDG_CONFIG_HOME=$(LEROBOT_WORK)/home/config KNACK_DEVICE_PASSWORD=$${KNACK_DEVICE_PASSWORD:-test-lerobot} \
		$(VENV)/bin/knack demo --data-dir $(LEROBOT_WORK)/demo
	env HOME=$(LEROBOT_WORK)/home XDG_CONFIG_HOME=$(LEROBOT_WORK)/home/config KNACK_DATA_DIR=$(LEROBOT_WORK)/demo \
		$(VENV)/bin/knack dataset build $(LEROBOT_WORK)/dataset
	HF_HUB_OFFLINE=1 $(LEROBOT_VENV)/bin/python tests/lerobot/load_dataset.py $(LEROBOT_WORK)/dataset
