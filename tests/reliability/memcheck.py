"""Envoy with our module under valgrind memcheck, over a short scenario that drives every
filter and failure path (transformations with bodies, JSON errors, CR/LF drops, ACL allow and
deny, a caught panic). Passes when valgrind reports no
error and no definite leak whose stack goes through librust_module.so; Envoy's own reports
are counted and shown, not judged.

    python tests/reliability/memcheck.py
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from envoy_harness import (  # noqa: E402
    ENVOY_BIN, MODULE_DIR, Upstream, free_port, gateway_config, module_filter, per_route, request,
)
import yaml  # noqa: E402

MODULE = "librust_module.so"
TX = "dynamic_modules/simple_mutations"
ACL = "dynamic_modules/http-acl"


def config(upstream_port: int) -> dict:
    def tx(c):
        return {TX: per_route("rustformation", json.dumps(c))}

    routes = [
        {"match": {"prefix": "/anything/json"}, "route": {"cluster": "httpbun"}, "typed_per_filter_config": tx(
            {"request": {"body": {"parseAs": "AsJson", "value": "{{ name }}"},
                         "set": [{"name": "x-b64", "value": "{{ base64_decode(request_header('x-in')) }}"}]},
             "response": {"set": [{"name": "x-out", "value": "%REQ(x-id)%-{{ header(':status') }}"}],
                          "body": {"value": "{{ body() | length }}"}}})},
        {"match": {"prefix": "/anything/deny"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": {ACL: per_route("http-acl", json.dumps(
             {"defaultAction": "deny", "denyResponse": {"blockedByHeaderName": "x-blocked-by"}}))}},
        # A local reply from the response headers hook: Envoy destroys the stream inside that hook.
        {"match": {"prefix": "/anything/reply-in-response"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": tx({"response": {"set": [{"name": "x", "value": "{{ model }}"}]}})},
        {"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}},
    ]
    filters = [
        module_filter("my-smart-header", "{}"),
        module_filter("test-panic", json.dumps({"panic_on": "request_body", "when_header": "x-panic"})),
        module_filter("http-acl", '{"defaultAction":"allow"}', http_filter_name=ACL, disabled=True),
        module_filter("rustformation", "{}", http_filter_name=TX, disabled=True),
    ]
    return gateway_config(upstream_port, filters, routes)


def scenario(port: int) -> list[str]:
    """Every request and what it must answer; returns the mismatches."""
    problems = []

    def expect(status, method, path, **kw):
        resp = request(port, method, path, timeout=60, **kw)
        if resp.status != status:
            problems.append(f"{method} {path}: {resp.status} != {status}")
        return resp

    for i in range(5):
        resp = expect(200, "POST", f"/anything/json/{i}", body=json.dumps({"name": "n" * (i * 1000)}),
                      headers={"x-id": str(i), "x-in": base64.b64encode(b"ok").decode()})
        if resp.header("x-out") != f"{i}-200":
            problems.append(f"x-out {resp.header('x-out')!r}")
    expect(200, "POST", "/anything/json/crlf", body='{"name": "a"}',
           headers={"x-in": base64.b64encode(b"a\r\nb").decode()})
    expect(400, "POST", "/anything/json/bad", body="{nope")
    expect(400, "POST", "/anything/json/deep", body="[" * 5000 + "]" * 5000)
    expect(403, "GET", "/anything/deny")
    expect(400, "POST", "/anything/reply-in-response", body="{}")
    expect(500, "POST", "/post", body="x", headers={"x-panic": "1"})
    expect(200, "GET", "/get")
    return problems


def main() -> int:
    upstream = Upstream()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="memcheck-"))
    cfg = copy.deepcopy(config(upstream.port))
    admin, port = free_port(), free_port()
    cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
    cfg["static_resources"]["listeners"][0]["address"] = {"socket_address": {"address": "127.0.0.1",
                                                                             "port_value": port}}
    (workdir / "envoy.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    xml_path = workdir / "valgrind.xml"
    args = ["valgrind", "--tool=memcheck", "--xml=yes", f"--xml-file={xml_path}", "--leak-check=full",
            "--show-leak-kinds=" + os.environ.get("MEMCHECK_LEAK_KINDS", "definite"),
            "--errors-for-leak-kinds=definite", "--num-callers=40",
            "--trace-children=no",
            # Envoy links tcmalloc statically: have valgrind replace the allocator in the executable.
            "--soname-synonyms=somalloc=NONE", ENVOY_BIN, "-c", str(workdir / "envoy.yaml"), "--concurrency", "1",
            "--disable-hot-restart", "--log-level", "warning"]
    env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=MODULE_DIR, RUST_MODULE_TEST_FILTERS="1")
    log = open(workdir / "envoy.log", "wb")
    started = time.time()
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    problems: list[str] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Envoy under valgrind exited: {(workdir / 'envoy.log').read_text()[-3000:]}")
            try:
                if request(admin, "GET", "/ready", timeout=5).status == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise RuntimeError("Envoy under valgrind did not become ready in 300 s")
        print(f"memcheck: Envoy ready under valgrind after {time.time() - started:.0f}s")
        problems += scenario(port)
    finally:
        proc.terminate()
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        upstream.stop()
        log.close()

    # Ours: the faulting code (the innermost frame past valgrind's own allocator wrappers) is in
    # the module, or a definite leak was allocated by it. Envoy links tcmalloc statically into a
    # stripped binary, so valgrind cannot follow Envoy's heap: frees in Envoy's own code (even
    # inside a callback we called) are reported as invalid and are Envoy's noise, listed apart.
    ours, on_stack, theirs = [], 0, 0
    root = ET.parse(xml_path).getroot()
    for error in root.iter("error"):
        if error.findtext("kind") in ("Leak_StillReachable", "Leak_PossiblyLost", "Leak_IndirectlyLost"):
            continue  # shown with MEMCHECK_LEAK_KINDS=all (proves module allocations are tracked)
        frames = [(f.findtext("obj") or "", f.findtext("fn") or "?") for f in error.iter("frame")]
        inner = [obj for obj, _ in frames if "vgpreload" not in obj]
        if inner and inner[0].endswith(MODULE):
            what = error.findtext("what") or error.findtext("xwhat/text") or error.findtext("kind")
            fns = [fn for _, fn in frames][:8]
            ours.append(f"{error.findtext('kind')}: {what}\n      " + "\n      ".join(fns))
        elif any(obj.endswith(MODULE) for obj, _ in frames):
            on_stack += 1
        else:
            theirs += 1
    print(f"memcheck: {len(ours)} reports faulting in {MODULE}; {on_stack} in Envoy code called from the "
          f"module and {theirs} elsewhere in Envoy (Envoy's tcmalloc noise, not judged); "
          f"total {time.time() - started:.0f}s")
    for item in ours:
        print(f"memcheck: module error: {item}")
    problems += [f"valgrind error through {MODULE}" for _ in ours]
    for p in problems:
        print(f"memcheck FAILED: {p}")
    print(f"memcheck: {0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
