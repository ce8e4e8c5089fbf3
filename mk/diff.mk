# The differential suite: our module beside kgateway v2.3's own, in two real Envoy 1.37.0.
#
#   make test-diff                                 generated cases, config acceptance, difference table
#   make test-diff DIFF_CASES=20000 DIFF_SEED=7    a larger run with another seed
#
# KGATEWAY_REFERENCE_MODULE names kgateway's librust_module.so (default: beside the repository,
# ../shared/reference/kgateway-v2.3/); without it the suite is skipped and says why.

DIFF_ENVOY_VERSION := 1.37.0
DIFF_CASES ?= 3000
DIFF_CONFIGS ?= 500
DIFF_SEED ?= 20261201

.PHONY: test-diff

# Always Envoy 1.37.0: the only Envoy kgateway's module loads in.
test-diff: build venv
	$(MAKE) --no-print-directory ENVOY_VERSION=$(DIFF_ENVOY_VERSION) envoy
	ENVOY_VERSION=$(DIFF_ENVOY_VERSION) ENVOY_BIN=$(TOOLS)/envoy-$(DIFF_ENVOY_VERSION)/envoy \
	  DIFF_CASES=$(DIFF_CASES) DIFF_CONFIGS=$(DIFF_CONFIGS) DIFF_SEED=$(DIFF_SEED) \
	  $(PY) -m pytest -q -rs -s tests/diff

TEST_CHECKS += test-diff
