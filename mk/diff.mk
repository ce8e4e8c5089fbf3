# The differential suite: our module beside kgateway's own, in two real Envoys of the oracle's
# release: kgateway v2.3's module in Envoy 1.37.0, then kgateway v2.4's in Envoy 1.38.3.
#
#   make test-diff                                 both oracles: generated cases, config acceptance, difference table
#   make test-diff DIFF_CASES=20000 DIFF_SEED=7 DIFF_SEED_V24=8    a larger run with other seeds
#   make test-diff DIFF_ORACLES=v2.4               one oracle only
#
# KGATEWAY_REFERENCE_MODULE names kgateway v2.3's librust_module.so, KGATEWAY_V24_REFERENCE_MODULE
# v2.4's (defaults: beside the repository, ../shared/reference/kgateway-<release>/); without one the
# suite of that oracle is skipped and says why (CI sets REQUIRE_KGATEWAY_REFERENCE=1: a failure).

DIFF_ORACLES ?= v2.3 v2.4
DIFF_CASES ?= 3000
DIFF_CONFIGS ?= 500
DIFF_SEED ?= 20261201
DIFF_SEED_V24 ?= 20261206
DIFF_ENVOY_v2.3 := 1.37.0
DIFF_ENVOY_v2.4 := 1.38.3
DIFF_SEED_v2.3 = $(DIFF_SEED)
DIFF_SEED_v2.4 = $(DIFF_SEED_V24)

.PHONY: test-diff

test-diff: build venv ## Differential suite: this module beside kgateway v2.3's and v2.4's in real Envoy
	@for oracle in $(DIFF_ORACLES); do \
	  case $$oracle in v2.3) envoy=$(DIFF_ENVOY_v2.3); seed=$(DIFF_SEED_v2.3);; \
	                   v2.4) envoy=$(DIFF_ENVOY_v2.4); seed=$(DIFF_SEED_v2.4);; \
	                   *) echo "unknown oracle $$oracle (v2.3 or v2.4)" >&2; exit 2;; esac; \
	  $(MAKE) --no-print-directory ENVOY_VERSION=$$envoy ENVOY_BIN=$(TOOLS)/envoy-$$envoy/envoy envoy || exit 1; \
	  echo "== differential suite against kgateway $$oracle's module, Envoy $$envoy, seed $$seed"; \
	  DIFF_ORACLE=$$oracle ENVOY_VERSION=$$envoy ENVOY_BIN=$(TOOLS)/envoy-$$envoy/envoy \
	    DIFF_CASES=$(DIFF_CASES) DIFF_CONFIGS=$(DIFF_CONFIGS) DIFF_SEED=$$seed \
	    $(PY) -m pytest -q -rs -s tests/diff || exit 1; \
	done

TEST_CHECKS += test-diff
