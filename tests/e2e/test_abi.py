"""The module and the Envoy it runs in agree on the ABI: one librust_module.so detects the API
family of the Envoy it is loaded into, returns the ABI string that Envoy expects (or the
ENVOY_ABI_VERSION override), exports the union of the hooks every supported Envoy looks up, and
refuses an Envoy it cannot serve with one precise line.

`make test-matrix` runs this file, with the same module file, in every supported Envoy.
"""

import json
import os
import pathlib
import re
import subprocess

import pytest

from envoy_harness import ENVOY_BIN, ENVOY_VERSION, MODULE_DIR, REPO, envoy_minor, lab_config, start_envoy

# The string each Envoy expects from on_program_init (measured; see docs/compatibility.md).
DOCUMENTED_ABI = {
    "1.36.2": "ca2be3b80954d2a0e22b41d033b18eff9390c30261c8ec9ffe6e6bf971f41c27",
    "1.36.3": "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7",
    "1.36.4": "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7",
    "1.37.0": "4dae397a7c9ff0238d318d57ea656ce8b3fbff595787dcd7ee2ff5b79c9fe10f",
    "1.38": "v0.1.0",
    "1.39": "v0.1.0",
    "1.40": "v0.2.0",
}
# An Envoy older than 1.36.3 (older body API): the module must refuse it. `make test-e2e` installs it.
OLD_ENVOY_BIN = os.environ.get("OLD_ENVOY_BIN", str(REPO / ".tools/envoy-1.36.2/envoy"))
OVERRIDE = os.environ.get("ENVOY_ABI_VERSION", "")
CHAT = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]})
MODULE = str(pathlib.Path(MODULE_DIR) / "librust_module.so")


def documented_abi(version: str) -> str:
    minor = ".".join(version.split(".")[:2])
    return DOCUMENTED_ABI.get(version) or DOCUMENTED_ABI[minor]


def family_of(version: str) -> str:
    """The module's name for the API family of an Envoy release."""
    minor = int(version.split(".")[1])
    return {36: "1.36", 37: "1.37", 38: "1.38", 39: "1.38", 40: "1.40"}[minor]


def symbols(path: str, which: str) -> set[str]:
    out = subprocess.run(["nm", "-D", which, path], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def hooks_envoy_looks_up(path: str) -> set[str]:
    """What `strings <envoy> | grep '^envoy_dynamic_module_on_'` shows: the hook names Envoy may dlsym."""
    data = pathlib.Path(path).read_bytes()
    return {m.decode() for m in re.findall(rb"(?<![\x20-\x7e])(envoy_dynamic_module_on_[a-z0-9_]+)\x00", data)}


@pytest.fixture(scope="module")
def module_abi() -> dict:
    # Written by `make build` from the SDK itself (examples/list_abi.rs).
    return json.loads((pathlib.Path(MODULE_DIR) / "abi.json").read_text())


@pytest.fixture(scope="module")
def envoy_abi() -> str:
    out = subprocess.run([str(REPO / "tools/envoy-abi"), ENVOY_BIN], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_envoy_abi_tool_reports_the_documented_string(envoy_abi, record_property):
    record_property("envoy_abi", envoy_abi)
    assert envoy_abi == documented_abi(ENVOY_VERSION)


def test_the_module_knows_the_string_of_this_envoys_family(module_abi, envoy_abi):
    assert module_abi["families"][family_of(ENVOY_VERSION)]["abi_version"] == envoy_abi
    assert module_abi["abi_override_env"] == "ENVOY_ABI_VERSION"


def test_every_callback_the_module_resolves_here_is_exported_by_envoy(module_abi):
    required = set(module_abi["families"][family_of(ENVOY_VERSION)]["required_callbacks"])
    assert len(required) > 20, required
    missing = required - symbols(ENVOY_BIN, "--defined-only")
    assert not missing, f"Envoy {ENVOY_VERSION} does not export: {sorted(missing)}"


def test_the_other_familys_callbacks_are_not_all_exported(module_abi):
    """Detection rests on the two API families being disjoint: this Envoy lacks the other one."""
    exported = symbols(ENVOY_BIN, "--defined-only")
    other = "1.37" if envoy_minor() == 36 else "1.36"
    assert set(module_abi["families"][other]["required_callbacks"]) - exported


def test_the_module_binds_no_envoy_callback_at_link_time():
    """Callbacks are resolved with dlsym at load: no undefined symbol only one family exports."""
    undefined = {s for s in symbols(MODULE, "--undefined-only") if s.startswith("envoy_")}
    assert not undefined, sorted(undefined)


def test_every_http_filter_hook_envoy_looks_up_is_exported_by_the_module(module_abi):
    wanted = {
        h for h in hooks_envoy_looks_up(ENVOY_BIN)
        if h.startswith("envoy_dynamic_module_on_http_filter_") or h == "envoy_dynamic_module_on_program_init"
    }
    # Every Envoy since 1.36 looks up at least these 14 (see envoy-abi notes): never vacuous.
    assert len(wanted) >= 14, sorted(wanted)
    exported = symbols(MODULE, "--defined-only")
    assert not wanted - exported, f"the module lacks: {sorted(wanted - exported)}"
    # The SDK's own list is what the library really exports.
    assert set(module_abi["exported_hooks"]) <= exported


def test_the_module_detects_this_envoy_and_returns_its_string(upstream, envoys, envoy_abi, record_property):
    envoy = start_envoy(lab_config(upstream.port))
    envoys.append(envoy)
    logs = envoy.logs()
    family = family_of(ENVOY_VERSION)
    returned = OVERRIDE or envoy_abi
    line = re.search(r"rust_module: Envoy API family (\S+) \(([^)]*)\) detected; returning ABI version (\S+)", logs)
    assert line, logs[-3000:]
    record_property("family", f"{line.group(1)} ({line.group(2)})")
    assert line.group(1) == family and line.group(3) == returned, line.group(0)
    assert "refusing to load" not in logs
    if not OVERRIDE:
        assert " is deprecated" not in logs, logs[-3000:]
        if envoy_minor() >= 38:
            assert f"Dynamic module ABI version {envoy_abi} matched." in logs, logs[-3000:]
    resp = envoy.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=CHAT)
    assert resp.status == 200
    assert resp.header("x-smart-header") == "method=POST&path=/v1/chat/completions"
    assert resp.header("x-custom-transformed") == "true"
    assert resp.json()["object"] == "chat.completion"


def test_the_override_replaces_the_string_at_run_time(upstream, envoys, envoy_abi):
    """ENVOY_ABI_VERSION in Envoy's environment is what the module returns, without a rebuild."""
    wrong = "v9.9.9"
    refuses = envoy_minor() in (36, 37)  # 1.36/1.37 refuse another string; 1.38+ only warn
    envoy = start_envoy(lab_config(upstream.port), env={"ENVOY_ABI_VERSION": wrong}, expect_failure=refuses)
    envoys.append(envoy)
    logs = envoy.logs()
    assert (f"returning ABI version {wrong} from ENVOY_ABI_VERSION (the family's own is "
            f"{documented_abi(ENVOY_VERSION)})") in logs, logs[-3000:]
    if envoy_minor() == 36:
        assert f"ABI version mismatch: got {wrong}, but expected {envoy_abi}" in logs, logs[-3000:]
    elif envoy_minor() == 37:
        # 1.37.0 reports a refused ABI string as "not found".
        assert "not found in any search path" in logs or "ABI version mismatch" in logs, logs[-3000:]
    else:
        assert f"ABI version {wrong} is deprecated" in logs, logs[-3000:]
        assert envoy.request("GET", "/get").status == 200
    if refuses:
        assert envoy.proc.returncode != 0

    # The right string given explicitly (a patch release's) is accepted like the detected one.
    envoy = start_envoy(lab_config(upstream.port), env={"ENVOY_ABI_VERSION": envoy_abi})
    envoys.append(envoy)
    assert f"returning ABI version {envoy_abi} from ENVOY_ABI_VERSION" in envoy.logs()
    assert envoy.request("GET", "/get").status == 200


def test_an_envoy_older_than_1_36_3_is_refused_with_one_precise_line(upstream, envoys, monkeypatch):
    """Envoy 1.36.2 speaks the 1.36 API with an older body API: the module says so and refuses."""
    import envoy_harness

    assert pathlib.Path(OLD_ENVOY_BIN).exists(), f"{OLD_ENVOY_BIN} missing: run `make envoy ENVOY_VERSION=1.36.2`"
    monkeypatch.setattr(envoy_harness, "ENVOY_BIN", OLD_ENVOY_BIN)
    envoy = start_envoy(lab_config(upstream.port), expect_failure=True)
    envoys.append(envoy)
    logs = envoy.logs()
    lines = [line for line in logs.splitlines() if "rust_module: refusing to load" in line]
    assert len(lines) == 1, logs[-3000:]
    line = lines[0]
    assert "the API family of Envoy 1.36 but does not export envoy_dynamic_module_callback_" in line, line
    assert "Envoy before 1.36.3" in line, line
    assert "supported: Envoy 1.36.3, 1.36.4, 1.37.x, 1.38.x, 1.39.x and 1.40.x" in line, line
    assert "ENVOY_ABI_VERSION=<string>" in line, line
    # Envoy refuses the module cleanly: an error exit, no crash.
    assert envoy.proc.returncode not in (0, -6, -11, 134, 139), envoy.proc.returncode
    assert "Failed to initialize dynamic module" in logs or "not found in any search path" in logs, logs[-3000:]
    assert "Caught Segmentation fault" not in logs and "Caught Aborted" not in logs
