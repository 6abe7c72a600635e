# Two commands on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here: the virtualenv, the Node tools the
# tests use (anvil, solc, the BBS interop peer) and the system packages they run
# for real (OpenLDAP, bubblewrap, Slurm and munge).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_CI := npm ci --no-audit --no-fund --loglevel=error

.PHONY: demo test lint contracts bench system-deps sandbox-deps node-deps slither-deps clean

demo: $(STAMP) sandbox-deps
	$(BIN)/xcentre demo

test: lint node-deps system-deps slither-deps
	$(BIN)/pytest -q

# The gates, configured in pyproject.toml: lint rules, the formatter's layout, types.
lint: $(STAMP)
	$(BIN)/ruff check ledger auth gateway tests scripts
	$(BIN)/ruff format --check ledger auth gateway tests scripts
	$(BIN)/mypy

contracts: contracts/node_modules/.package-lock.json
	node scripts/compile_contracts.mjs

bench: $(STAMP) contracts/node_modules/.package-lock.json
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python scripts/bench/run_all.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Slither (static analysis of the contracts, tests/test_slither.py) needs web3 < 8, which
# the project cannot share, so it gets a virtualenv of its own; it compiles through
# scripts/solc, a `solc` command line over the pinned solcjs.
SLITHER := slither-analyzer==0.11.6

slither-deps: $(VENV)/slither/.installed

$(VENV)/slither/.installed:
	$(PYTHON) -m venv $(VENV)/slither
	$(VENV)/slither/bin/pip install -q '$(SLITHER)'
	touch $@

node-deps: contracts/node_modules/.package-lock.json tests/interop/node_modules/.package-lock.json

contracts/node_modules/.package-lock.json: contracts/package-lock.json
	cd contracts && $(NPM_CI)

tests/interop/node_modules/.package-lock.json: tests/interop/package-lock.json
	cd tests/interop && $(NPM_CI)

# System packages the tests run for real: OpenLDAP (slapd, ldap-utils), the job
# sandbox (bubblewrap) and a single-node Slurm (slurm-wlm, munge). Daemons live
# in /usr/sbin, which a non-root PATH may not list, so each is checked there.
SYSTEM_PKGS := slapd ldap-utils bubblewrap slurm-wlm munge
SYSTEM_BINS := /usr/sbin/slapd /usr/bin/ldapadd /usr/bin/bwrap /usr/sbin/slurmctld /usr/sbin/slurmd \
               /usr/bin/sbatch /usr/bin/squeue /usr/bin/scontrol /usr/bin/scancel /usr/bin/sinfo \
               /usr/sbin/munged

system-deps:
	@missing=; for bin in $(SYSTEM_BINS); do [ -x $$bin ] || missing="$$missing $$bin"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(SYSTEM_PKGS) (apt; missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS) >/dev/null; \
	else \
		echo "The tests need$$missing: run 'sudo apt-get install $(SYSTEM_PKGS)' and then 'make test' again." >&2; exit 1; \
	fi

# The demo sandboxes its jobs with bubblewrap when it can: as root it installs it;
# otherwise the demo says loudly that it runs jobs unsandboxed.
sandbox-deps:
	@if [ ! -x /usr/bin/bwrap ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing bubblewrap (apt) to sandbox the demo's jobs"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; \
	fi

clean:
	rm -rf $(VENV) contracts/node_modules tests/interop/node_modules
