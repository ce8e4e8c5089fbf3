# The rustformations CLI on the repository's own manifests.
#
#   make validate    render k8s/ with kustomize (as test-k8s does), then `rustformations validate` on it
#
# The CLI is built by `make build` next to the module (.work/module/rustformations).

CLI := $(MODULE_DIR)/rustformations

.PHONY: validate test-cli

validate: build ship-tools ## rustformations validate on the rendered k8s/ (every TrafficPolicy compiled as the module would)
	@mkdir -p $(WORK)
	$(VENV)/bin/kubectl kustomize $(CURDIR)/k8s > $(WORK)/k8s-rendered.yaml
	$(CLI) validate $(WORK)/k8s-rendered.yaml

# The corpus of kgateway transformation cases through the CLI and the real Envoy: identical
# upstream requests and client responses. Also part of the end-to-end suite (tests/e2e), so it
# runs in every Envoy of `make test-matrix`.
test-cli: build envoy venv ## kgateway transformation cases through the CLI and the real Envoy: identical results
	$(PY) -m pytest -q tests/e2e/test_cli_matches_envoy.py

TEST_CHECKS += validate
