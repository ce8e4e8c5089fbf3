# One module file, every supported Envoy: the same tests in each, and the compatibility table.
#
#   make test-matrix                        build librust_module.so once, then the whole suite with that
#                                           file in each Envoy of MATRIX_VERSIONS in turn (its sha256
#                                           printed and checked); the table of docs/compatibility.md is checked
#   make ENVOY_VERSION=1.36.4 test-matrix   the same for that one Envoy (make test does this too)
#   make compat-table                       rewrite the table of docs/compatibility.md from the last run
#   make envoy-abi [ENVOY_BIN=/path/envoy]  print the ABI version string that Envoy expects
#
# `make test` runs test-matrix instead of the one-version test-e2e.

# The newest patch on PyPI of each minor, and the oldest supported (1.36.3): 1.36.3 to 1.40.
MATRIX_ALL := 1.36.3 1.36.4 1.37.0 1.38.3 1.39.3 1.40.0
# An ENVOY_VERSION given on the command line narrows the matrix to it; plain `make test` runs all.
MATRIX_VERSIONS ?= $(if $(filter command line,$(origin ENVOY_VERSION)),$(ENVOY_VERSION),$(MATRIX_ALL))
MATRIX_DIR := $(WORK)/matrix
# Not spelled $(MAKE) in the recipe, so `make -n test` does not run the matrix.
MATRIX_MAKE = $(MAKE)

.PHONY: test-matrix compat-table envoy-abi

test-matrix: venv ## Build once, then the end-to-end suite with that file in each Envoy of MATRIX_VERSIONS
	MAKE="$(MATRIX_MAKE)" CARGO="$(CARGO)" PY="$(PY)" TOOLS="$(TOOLS)" MATRIX_DIR="$(MATRIX_DIR)" \
	  MATRIX_VERSIONS="$(MATRIX_VERSIONS)" \
	  tools/test-matrix

compat-table: venv ## Rewrite the table of docs/compatibility.md from the last test-matrix run
	$(PY) tools/compat-table --results $(MATRIX_DIR) --write docs/compatibility.md

envoy-abi: envoy ## Print the ABI version string ENVOY_BIN expects
	@tools/envoy-abi $(ENVOY_BIN)
