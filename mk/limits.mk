# The stress suite: policies and requests that would abort Envoy, stall its worker or balloon its
# memory without the render budget (issue 22), in the real Envoy (one worker) and through the CLI.
#
#   make test-limits                                   Envoy 1.37.0 and 1.40.0, then the CLI
#   make test-limits LIMITS_ENVOY_VERSIONS=1.38.3       another Envoy
#
# Figures (time, peak RSS growth, the plain request's latency) go to .work/limits/*.jsonl;
# docs/failure-behaviour.md shows a run.

LIMITS_ENVOY_VERSIONS ?= 1.37.0 1.40.0

.PHONY: test-limits

test-limits: build venv ## The stress suite of bounded work: Envoy $(LIMITS_ENVOY_VERSIONS) with one worker, then the CLI
	@rm -rf $(WORK)/limits
	@for v in $(LIMITS_ENVOY_VERSIONS); do \
	  $(MAKE) --no-print-directory ENVOY_VERSION=$$v ENVOY_BIN=$(TOOLS)/envoy-$$v/envoy envoy; \
	  echo "stress suite in Envoy $$v"; \
	  ENVOY_VERSION=$$v ENVOY_BIN=$(TOOLS)/envoy-$$v/envoy $(PY) -m pytest -q tests/limits/test_envoy_limits.py; \
	done
	$(PY) -m pytest -q tests/limits/test_cli_limits.py
	$(PY) tests/limits/figures.py

TEST_CHECKS += test-limits
