# Deploy the custom Envoy image on kind behind kgateway, plus the offline checks
# of everything that ships (manifests, Dockerfile, this flow).
#
#   make kind-up image kind-load deploy      # cluster + kgateway + our proxy + httpbun
#   make port-forward                        # localhost:8082 -> gateway :8080 (foreground)
#   make smoke                               # the lab's curl, with exact header checks
#   make kind-down
#   make test-ship                           # test-k8s test-dockerfile test-kind-dryrun
#
# Tool checks run inside recipes (not at parse time) so `make -n` works on a
# machine without docker, kind, kubectl or helm.

# Directory holding this repo; this file lives in <repo>/mk.
KIND_MK_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
REPO ?= $(abspath $(KIND_MK_DIR)/..)

KIND_CLUSTER ?= ai-gateway-lab
GATEWAY_API_VERSION ?= v1.4.0
# The kgateway image extends envoy-wrapper $(KGATEWAY_VERSION): pick the release you run (v2.2
# carries Envoy 1.36, v2.3 1.37.2+, v2.4 1.38). The module is the same file for all of them, so
# one image per module version (IMAGE_TAG); ENVOY_VERSION is only the standalone image's base.
KGATEWAY_VERSION ?= v2.3.0

# Must match k8s/gatewayparameters.yaml (registry "", repository, tag).
IMAGE_REPO ?= rustformations-envoy
IMAGE_TAG ?= 0.1.0
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)

KGATEWAY_NAMESPACE ?= kgateway-system
LAB_NAMESPACE ?= default
# kgateway names the proxy Deployment and Service after the Gateway.
GATEWAY_NAME ?= ai-gateway
GATEWAY_PORT ?= 8080
LOCAL_PORT ?= 8082

DOCKER ?= docker
KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
# Always talk to the lab cluster, whatever the current kubectl context is.
LAB_KUBECTL = $(KUBECTL) --context kind-$(KIND_CLUSTER)
LAB_HELM = $(HELM) --kube-context kind-$(KIND_CLUSTER)

GATEWAY_API_CRDS_URL = https://github.com/kubernetes-sigs/gateway-api/releases/download/$(GATEWAY_API_VERSION)/standard-install.yaml
KGATEWAY_CHARTS = oci://cr.kgateway.dev/kgateway-dev/charts

# CRDs for offline validation: CI has ../shared/crds next to the clone;
# elsewhere `make crds` downloads them into .work/crds (then CRD_DIR=.work/crds).
CRD_DIR ?= $(REPO)/../shared/crds
WORK_DIR ?= $(REPO)/.work
TOOLS_DIR ?= $(REPO)/.tools
VENV ?= $(TOOLS_DIR)/venv
SHIP_REQUIREMENTS = $(REPO)/tools/k8s-validate/requirements.txt
SHIP_TOOLS_STAMP = $(VENV)/.ship-tools-installed
SHIP_PY = $(VENV)/bin/python

# $(call kind_require,tool ...): fail with a clear message naming every missing tool.
kind_require = missing=; for t in $(1); do command -v "$$t" >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then echo "error: this target needs:$$missing (not found in PATH)" >&2; exit 1; fi
# $(call kind_require_cluster): fail unless the kind cluster exists.
kind_require_cluster = $(KIND) get clusters 2>/dev/null | grep -x '$(KIND_CLUSTER)' >/dev/null || \
	{ echo "error: kind cluster '$(KIND_CLUSTER)' does not exist; run 'make kind-up' first" >&2; exit 1; }

SMOKE_URL = http://localhost:$(LOCAL_PORT)/v1/chat/completions
SMOKE_BODY = {"model":"gpt-4","messages":[{"role":"user","content":"Hello"}]}

.PHONY: kind-up image kind-load deploy port-forward smoke kind-down crds \
	ship-tools test-k8s test-dockerfile test-kind-dryrun test-ship

kind-up: ## Create the kind cluster, install Gateway API CRDs and kgateway
	@$(call kind_require,$(KIND) $(KUBECTL) $(HELM) $(DOCKER))
	@if $(KIND) get clusters 2>/dev/null | grep -x '$(KIND_CLUSTER)' >/dev/null; then \
		echo "kind cluster '$(KIND_CLUSTER)' already exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --wait 180s; \
	fi
	$(LAB_KUBECTL) apply --server-side -f $(GATEWAY_API_CRDS_URL)
	$(LAB_HELM) upgrade --install kgateway-crds $(KGATEWAY_CHARTS)/kgateway-crds \
		--version $(KGATEWAY_VERSION) --namespace $(KGATEWAY_NAMESPACE) --create-namespace --wait
	$(LAB_HELM) upgrade --install kgateway $(KGATEWAY_CHARTS)/kgateway \
		--version $(KGATEWAY_VERSION) --namespace $(KGATEWAY_NAMESPACE) --create-namespace --wait
	$(LAB_KUBECTL) -n $(KGATEWAY_NAMESPACE) rollout status deployment/kgateway --timeout=180s
	$(LAB_KUBECTL) wait --for=condition=Accepted gatewayclass/kgateway --timeout=120s

image: ## Build the kgateway proxy image (envoy-wrapper + our module) as $(IMAGE)
	@$(call kind_require,$(DOCKER))
	DOCKER_BUILDKIT=1 $(DOCKER) build --target kgateway \
		--build-arg KGATEWAY_VERSION=$(KGATEWAY_VERSION) \
		--build-arg ENVOY_VERSION=$(ENVOY_VERSION) \
		-t $(IMAGE) $(REPO)

kind-load: ## Copy $(IMAGE) onto the kind node (no registry needed)
	@$(call kind_require,$(KIND) $(DOCKER))
	@$(call kind_require_cluster)
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: ## Apply k8s/ and wait for httpbun and the gateway proxy
	@$(call kind_require,$(KIND) $(KUBECTL))
	@$(call kind_require_cluster)
	$(LAB_KUBECTL) apply -k $(REPO)/k8s
	$(LAB_KUBECTL) -n $(LAB_NAMESPACE) rollout status deployment/httpbun --timeout=180s
	$(LAB_KUBECTL) -n $(LAB_NAMESPACE) wait --for=condition=Programmed gateway/$(GATEWAY_NAME) --timeout=180s
	@echo "waiting for kgateway to create deployment/$(GATEWAY_NAME)"; \
	for i in $$(seq 1 90); do \
		$(LAB_KUBECTL) -n $(LAB_NAMESPACE) get deployment/$(GATEWAY_NAME) >/dev/null 2>&1 && exit 0; sleep 2; \
	done; echo "error: deployment/$(GATEWAY_NAME) never appeared; see 'kubectl -n $(KGATEWAY_NAMESPACE) logs deploy/kgateway'" >&2; exit 1
	$(LAB_KUBECTL) -n $(LAB_NAMESPACE) rollout status deployment/$(GATEWAY_NAME) --timeout=180s

port-forward: ## Forward localhost:$(LOCAL_PORT) to the gateway's :$(GATEWAY_PORT) (Ctrl-C to stop)
	@$(call kind_require,$(KIND) $(KUBECTL))
	@$(call kind_require_cluster)
	$(LAB_KUBECTL) -n $(LAB_NAMESPACE) port-forward deployment/$(GATEWAY_NAME) $(LOCAL_PORT):$(GATEWAY_PORT)

smoke: ## POST the lab request through localhost:$(LOCAL_PORT); fail unless 200 and both headers are exact
	@$(call kind_require,curl)
	@set -u; hdrs=$$(mktemp); body=$$(mktemp); trap 'rm -f "$$hdrs" "$$body"' EXIT; \
	code=$$(curl -sS -o "$$body" -D "$$hdrs" -w '%{http_code}' --max-time 20 \
		-X POST $(SMOKE_URL) -H 'Content-Type: application/json' -d '$(SMOKE_BODY)') || \
		{ echo "error: nothing answers on localhost:$(LOCAL_PORT); run 'make port-forward' in another terminal" >&2; exit 1; }; \
	hdr() { tr -d '\r' < "$$hdrs" | grep -i "^$$1:" | sed 's/^[^:]*: *//'; }; \
	fail=0; cat "$$hdrs" "$$body"; echo; \
	[ "$$code" = 200 ] || { echo "FAIL: status $$code, expected 200" >&2; fail=1; }; \
	[ "$$(hdr x-custom-transformed)" = "true" ] || \
		{ echo "FAIL: x-custom-transformed is '$$(hdr x-custom-transformed)', expected 'true'" >&2; fail=1; }; \
	[ "$$(hdr x-smart-header)" = "method=POST&path=/v1/chat/completions" ] || \
		{ echo "FAIL: x-smart-header is '$$(hdr x-smart-header)', expected 'method=POST&path=/v1/chat/completions'" >&2; fail=1; }; \
	grep -q '"object": *"chat.completion"' "$$body" || { echo "FAIL: body is not httpbun's chat completion" >&2; fail=1; }; \
	[ "$$fail" = 0 ] && echo "smoke: OK"

kind-down: ## Delete the kind cluster
	@$(call kind_require,$(KIND))
	$(KIND) delete cluster --name $(KIND_CLUSTER)

crds: ## Download the Gateway API and kgateway CRDs into .work/crds (needs internet and helm)
	@$(call kind_require,curl $(HELM))
	mkdir -p $(WORK_DIR)/crds/gateway-api-$(GATEWAY_API_VERSION) $(WORK_DIR)/crds/kgateway-$(KGATEWAY_VERSION)
	curl -fsSL -o $(WORK_DIR)/crds/gateway-api-$(GATEWAY_API_VERSION)/standard-install.yaml $(GATEWAY_API_CRDS_URL)
	$(HELM) template kgateway-crds $(KGATEWAY_CHARTS)/kgateway-crds --version $(KGATEWAY_VERSION) --include-crds \
		> $(WORK_DIR)/crds/kgateway-$(KGATEWAY_VERSION)/kgateway-crds.yaml
	@echo "CRDs in $(WORK_DIR)/crds; validate with: make test-k8s CRD_DIR=$(WORK_DIR)/crds"

# Project-local python tools (kubectl with kustomize, hadolint, kubernetes-validate,
# cel-python, pytest), reinstalled only when requirements.txt changes.
ship-tools: $(SHIP_TOOLS_STAMP) ## Install the ship checks' Python tools (kubectl, kustomize, hadolint, ...)
$(SHIP_TOOLS_STAMP): $(SHIP_REQUIREMENTS)
	@$(call kind_require,python3)
	test -x $(SHIP_PY) || python3 -m venv $(VENV)
	$(SHIP_PY) -m pip install --quiet --disable-pip-version-check -r $(SHIP_REQUIREMENTS)
	touch $@

test-k8s: ship-tools ## Render k8s/ and validate it strictly offline, plus the validator's own tests
	CRD_DIR=$(CRD_DIR) KUBECTL=$(VENV)/bin/kubectl $(SHIP_PY) $(REPO)/tools/k8s-validate/k8s_validate.py --kustomize $(REPO)/k8s
	cd $(REPO)/tools/k8s-validate && CRD_DIR=$(CRD_DIR) KUBECTL=$(VENV)/bin/kubectl $(SHIP_PY) -m pytest -q -p no:cacheprovider .

test-dockerfile: ship-tools ## hadolint + Dockerfile structure test
	$(VENV)/bin/hadolint $(REPO)/Dockerfile
	cd $(REPO) && $(SHIP_PY) -m pytest -q -p no:cacheprovider tests/ship/test_dockerfile.py

test-kind-dryrun: ship-tools ## `make -n` the whole kind flow and check the commands it would run
	@mkdir -p $(WORK_DIR)
	$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) -n kind-up image kind-load deploy smoke kind-down \
		> $(WORK_DIR)/kind-dryrun.txt
	cd $(REPO) && DRYRUN_FILE=$(WORK_DIR)/kind-dryrun.txt $(SHIP_PY) -m pytest -q -p no:cacheprovider tests/ship/test_kind_dryrun.py

TEST_CHECKS += test-ship
test-ship: test-k8s test-dockerfile test-kind-dryrun ## Everything that ships, checked offline
