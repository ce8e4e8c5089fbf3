"""`make -n` of the kind flow must work without docker/kind/kubectl/helm and show the right commands.

`make test-kind-dryrun` writes the dry run to $DRYRUN_FILE; run alone, this test makes its own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLOW = ["kind-up", "image", "kind-load", "deploy", "smoke", "kind-down"]


def makefile() -> Path:
    return REPO / "Makefile"


def bare_path(tmp: Path) -> str:
    """A PATH holding only what make and the shell need: no docker, kind, kubectl or helm."""
    for tool in ("make", "sh", "bash", "env"):
        found = shutil.which(tool)
        if found:
            (tmp / tool).symlink_to(found)
    return str(tmp)


def dry_run(tmp_path: Path, *targets: str, **overrides: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = bare_path(tmp_path)
    args = [shutil.which("make"), "--no-print-directory", "-f", str(makefile()), "-n", *targets]
    args += [f"{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    given = os.environ.get("DRYRUN_FILE")
    if given:
        return Path(given).read_text()
    return dry_run(tmp_path_factory.mktemp("bin"), *FLOW)


def joined(text: str) -> str:
    """Recipe lines with their backslash continuations folded, for whole-command matching."""
    return re.sub(r"[ \t]+", " ", re.sub(r"\\\n\s*", " ", text))


def test_dry_run_works_without_the_tools(tmp_path):
    assert dry_run(tmp_path, *FLOW)


EXPECTED = [
    "kind create cluster --name ai-gateway-lab",
    "kubectl --context kind-ai-gateway-lab apply --server-side -f "
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.0/standard-install.yaml",
    "upgrade --install kgateway-crds oci://cr.kgateway.dev/kgateway-dev/charts/kgateway-crds --version v2.3.0",
    "upgrade --install kgateway oci://cr.kgateway.dev/kgateway-dev/charts/kgateway --version v2.3.0",
    "rollout status deployment/kgateway",
    "docker build --target kgateway",
    "--build-arg KGATEWAY_VERSION=v2.3.0",
    "-t rustformations-envoy:0.1.0",
    "kind load docker-image rustformations-envoy:0.1.0 --name ai-gateway-lab",
    "kubectl --context kind-ai-gateway-lab apply -k",
    "rollout status deployment/httpbun",
    "wait --for=condition=Programmed gateway/ai-gateway",
    "rollout status deployment/ai-gateway",
    "-X POST http://localhost:8082/v1/chat/completions -H 'Content-Type: application/json' "
    "-d '{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'",
    '"method=POST&path=/v1/chat/completions"',
    "x-custom-transformed",
    "kind delete cluster --name ai-gateway-lab",
]


@pytest.mark.parametrize("needle", EXPECTED)
def test_flow_contains(output, needle):
    assert needle in joined(output)


def test_flow_order(output):
    text = joined(output)
    marks = ["kind create cluster", "docker build", "kind load docker-image", "apply -k",
             "/v1/chat/completions", "kind delete cluster"]
    positions = [text.index(m) for m in marks]
    assert positions == sorted(positions)


def test_every_target_checks_its_tools(output):
    text = joined(output)
    assert text.count('command -v "$t"') >= len(FLOW)
    assert "does not exist; run 'make kind-up' first" in text


def test_the_image_is_the_same_module_for_any_envoy(tmp_path):
    out = joined(dry_run(tmp_path, "image", ENVOY_VERSION="1.36.4", KGATEWAY_VERSION="v2.2.0"))
    assert "--build-arg KGATEWAY_VERSION=v2.2.0" in out
    assert "-t rustformations-envoy:0.1.0" in out
    assert "ENVOY_FEATURE" not in out and "ENVOY_ABI_VERSION" not in out
