# Two commands on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here: the virtualenv, the Node tools the
# tests use (anvil, solc, the BBS interop peer) and OpenLDAP's slapd.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_CI := npm ci --no-audit --no-fund --loglevel=error

.PHONY: demo test contracts bench system-deps node-deps clean

demo: $(STAMP)
	$(BIN)/xcentre demo

test: $(STAMP) node-deps system-deps
	$(BIN)/pytest -q

contracts: contracts/node_modules/.package-lock.json
	node scripts/compile_contracts.mjs

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python scripts/bench/run_all.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

node-deps: contracts/node_modules/.package-lock.json tests/interop/node_modules/.package-lock.json

contracts/node_modules/.package-lock.json: contracts/package-lock.json
	cd contracts && $(NPM_CI)

tests/interop/node_modules/.package-lock.json: tests/interop/package-lock.json
	cd tests/interop && $(NPM_CI)

# slapd lives in /usr/sbin, which a non-root PATH may not list.
system-deps:
	@if [ -x /usr/sbin/slapd ] && command -v ldapadd >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing slapd and ldap-utils (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils >/dev/null; \
	else \
		echo "The tests need OpenLDAP: run 'sudo apt-get install slapd ldap-utils' and then 'make test' again." >&2; exit 1; \
	fi

clean:
	rm -rf $(VENV) contracts/node_modules tests/interop/node_modules
