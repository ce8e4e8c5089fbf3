# A module of one's own: examples/own-filter builds librust_module.so from every built-in filter
# plus `tenant-router`, as a crate outside this workspace would (its own Cargo.lock and target/).
#
#   make test-own-filter   its format and lint checks and unit tests, then its release build, then
#                          tenant-router's end-to-end tests and the whole end-to-end suite of the
#                          built-in filters with that file, in Envoy $(ENVOY_VERSION)
#
# The unit tests enable envoy-module's `testing` (the fake Envoy) from a dev-dependency; the module
# is then built in a cargo invocation of its own, so the file Envoy loads carries none of it.

OWN_FILTER := $(CURDIR)/examples/own-filter
OWN_FILTER_MODULE_DIR := $(WORK)/own-filter

.PHONY: test-own-filter

test-own-filter: build envoy old-envoy venv ## examples/own-filter: lint, unit tests, release build, its e2e tests and the built-in filters' e2e suite with its .so
	cd $(OWN_FILTER) && $(CARGO) fmt --check
	cd $(OWN_FILTER) && $(CARGO) clippy --release --all-targets -- -D warnings
	cd $(OWN_FILTER) && $(CARGO) test --release
	cd $(OWN_FILTER) && $(CARGO) build --release
	@mkdir -p $(OWN_FILTER_MODULE_DIR)
	cp $(OWN_FILTER)/target/release/librust_module.so $(OWN_FILTER_MODULE_DIR)/librust_module.so.tmp
	mv $(OWN_FILTER_MODULE_DIR)/librust_module.so.tmp $(OWN_FILTER_MODULE_DIR)/librust_module.so
	cp $(MODULE_DIR)/abi.json $(OWN_FILTER_MODULE_DIR)/abi.json
	MODULE_DIR=$(OWN_FILTER_MODULE_DIR) $(PY) -m pytest -q -p no:cacheprovider $(OWN_FILTER)/tests
	MODULE_DIR=$(OWN_FILTER_MODULE_DIR) $(PY) -m pytest -q -p no:cacheprovider tests/e2e

TEST_CHECKS += test-own-filter
