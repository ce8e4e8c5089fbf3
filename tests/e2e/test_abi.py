"""The module and the Envoy it runs in agree on the ABI: the version string, the callback and hook
names, and what happens when they do not (a module built for one Envoy loaded into another).

The cross-loading tests need every target's module under MODULE_ROOT/<feature>/ (`make
test-matrix` builds them all). Run alone (`make test-e2e`), a missing one is skipped with the
reason; under the matrix (ENVOY_MATRIX=1) it is a failure.
"""

import json
import os
import pathlib
import re
import subprocess

import pytest

import envoy_harness
from envoy_harness import ENVOY_BIN, ENVOY_VERSION, MODULE_DIR, REPO, envoy_minor, lab_config, start_envoy

# The string each Envoy expects from on_program_init (measured; see the README's Envoy versions section).
DOCUMENTED_ABI = {
    "1.36.2": "ca2be3b80954d2a0e22b41d033b18eff9390c30261c8ec9ffe6e6bf971f41c27",
    "1.36.3": "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7",
    "1.36.4": "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7",
    "1.37.0": "4dae397a7c9ff0238d318d57ea656ce8b3fbff595787dcd7ee2ff5b79c9fe10f",
    "1.38": "v0.1.0",
    "1.39": "v0.1.0",
    "1.40": "v0.2.0",
}
# Cargo feature -> the release family it targets (1.38 stands for 1.38 and 1.39).
TARGETS = {"envoy-1-36": 36, "envoy-1-37": 37, "envoy-1-38": 38, "envoy-1-40": 40}
MODULE_ROOT = pathlib.Path(os.environ.get("MODULE_ROOT", str(pathlib.Path(MODULE_DIR).parent)))
MATRIX = os.environ.get("ENVOY_MATRIX") == "1"
OVERRIDE = os.environ.get("ENVOY_ABI_VERSION", "")
CHAT = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]})


def documented_abi(version: str) -> str:
    minor = ".".join(version.split(".")[:2])
    return DOCUMENTED_ABI.get(version) or DOCUMENTED_ABI[minor]


def running_family() -> int:
    minor = envoy_minor()
    return 38 if minor == 39 else minor


def defined_symbols(path: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def hooks_envoy_looks_up(path: str) -> set[str]:
    """What `strings <envoy> | grep '^envoy_dynamic_module_on_'` shows: the hook names Envoy may dlsym."""
    data = pathlib.Path(path).read_bytes()
    return {m.decode() for m in re.findall(rb"(?<![\x20-\x7e])(envoy_dynamic_module_on_[a-z0-9_]+)\x00", data)}


@pytest.fixture(scope="module")
def module_abi() -> dict:
    # Written by `make build` from the SDK itself (examples/list_abi.rs) for the same feature.
    return json.loads((pathlib.Path(MODULE_DIR) / "abi.json").read_text())


@pytest.fixture(scope="module")
def envoy_abi() -> str:
    out = subprocess.run([str(REPO / "tools/envoy-abi"), ENVOY_BIN], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_envoy_abi_tool_reports_the_documented_string(envoy_abi, record_property):
    record_property("envoy_abi", envoy_abi)
    assert envoy_abi == documented_abi(ENVOY_VERSION)


def test_module_returns_the_string_this_envoy_expects(module_abi, envoy_abi):
    if OVERRIDE:
        assert module_abi["abi_version"] == OVERRIDE
    else:
        assert module_abi["abi_version"] == envoy_abi


def test_every_callback_the_module_resolves_is_exported_by_envoy(module_abi):
    required = set(module_abi["required_callbacks"])
    assert len(required) > 20, required
    missing = required - defined_symbols(ENVOY_BIN)
    assert not missing, f"Envoy {ENVOY_VERSION} does not export: {sorted(missing)}"


def test_every_http_filter_hook_envoy_looks_up_is_exported_by_the_module(module_abi):
    module = str(pathlib.Path(MODULE_DIR) / "librust_module.so")
    wanted = {
        h for h in hooks_envoy_looks_up(ENVOY_BIN)
        if h.startswith("envoy_dynamic_module_on_http_filter_") or h == "envoy_dynamic_module_on_program_init"
    }
    # Every Envoy since 1.36 looks up at least these 14 (see envoy-abi notes): never vacuous.
    assert len(wanted) >= 14, sorted(wanted)
    exported = defined_symbols(module)
    assert not wanted - exported, f"the module lacks: {sorted(wanted - exported)}"
    # The SDK's own list is what the library really exports.
    assert set(module_abi["exported_hooks"]) <= exported


def expected_outcome(target: int, running: int) -> str:
    """What loading a module built for `target` into an Envoy of family `running` does (measured)."""
    if target == running:
        return "loads"
    if running == 36 or target == 36:
        return "refused by the module"  # the other API family: callbacks missing
    if running == 37:
        return "refused by Envoy"  # the unified API, but 1.37 refuses any other ABI string
    return "loads with a warning"  # 1.38+ only warn about the ABI string


def observe(envoy, abi: str) -> str:
    logs = envoy.logs()
    if not envoy.alive():
        if "rust_module: this module was built for Envoy" in logs and "does not export" in logs:
            return "refused by the module"
        return "refused by Envoy"
    if f"ABI version {abi} is deprecated" in logs:
        return "loads with a warning"
    return "loads"


@pytest.mark.parametrize("feature", sorted(TARGETS))
def test_a_module_for_each_target_in_this_envoy(feature, upstream, envoys, record_property, monkeypatch):
    target, running = TARGETS[feature], running_family()
    module_dir = MODULE_ROOT / feature
    if not (module_dir / "abi.json").exists():
        message = f"no module built for {feature} in {module_dir} (make test-matrix builds every target)"
        if MATRIX:
            pytest.fail(message)
        pytest.skip(message)
    abi = json.loads((module_dir / "abi.json").read_text())["abi_version"]
    expected = expected_outcome(target, running)
    # start_envoy points ENVOY_DYNAMIC_MODULES_SEARCH_PATH at the harness's MODULE_DIR.
    monkeypatch.setattr(envoy_harness, "MODULE_DIR", str(module_dir))
    envoy = start_envoy(lab_config(upstream.port), expect_failure=expected.startswith("refused"))
    envoys.append(envoy)
    logs = envoy.logs()
    outcome = observe(envoy, abi)
    record_property("outcome", outcome)
    assert outcome == expected, logs[-3000:]

    if outcome == "refused by the module":
        # Our line names what is missing and the fix.
        hint = "ENVOY_VERSION=1.36" if running == 36 else "ENVOY_VERSION=1.37 (or the 1.38/1.40 target)"
        assert re.search(r"rust_module: this module was built for Envoy .* does not export "
                         r"envoy_dynamic_module_callback_\w+", logs), logs[-3000:]
        assert f"rebuild with {hint}" in logs, logs[-3000:]
        # Envoy's own words: 1.37.0 reports any refused module as "not found".
        assert ("Failed to initialize dynamic module" in logs or "not found in any search path" in logs), logs[-3000:]
        assert envoy.proc.returncode != 0
        return
    if target != running and not OVERRIDE:
        # The unified API: our module sees which release it runs in and says how to rebuild.
        assert (f"rust_module: this module was built for Envoy" in logs
                and f"but this Envoy exports the callbacks of Envoy 1.{running}" in logs
                and f"rebuild with ENVOY_VERSION=1.{running}.x" in logs), logs[-3000:]
    if outcome == "refused by Envoy":
        # 1.37.0 hides the mismatch behind "not found"; other 1.37 releases may name it.
        assert ("ABI version mismatch" in logs or "not found in any search path" in logs), logs[-3000:]
        assert envoy.proc.returncode != 0
        return
    if outcome == "loads":
        assert "but this Envoy exports the callbacks" not in logs
        if running >= 38:
            assert f"Dynamic module ABI version {abi} matched." in logs, logs[-3000:]
    # Loaded, with or without Envoy's warning: it must also work.
    resp = envoy.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=CHAT)
    assert resp.status == 200
    assert resp.header("x-smart-header") == "method=POST&path=/v1/chat/completions"
    assert resp.header("x-custom-transformed") == "true"
    assert resp.json()["object"] == "chat.completion"
