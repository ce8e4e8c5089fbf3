#!/usr/bin/env python3
"""Throughput, latency and CPU of the module's filters in the real Envoy, against Envoy's own filters.

Every scenario is an Envoy (`--concurrency 1`, pinned to CPU 0) in front of the same upstream: a
second Envoy answering with `direct_response`, pinned with the load generator (`wrk`, HTTP/1.1
keep-alive) to CPU 1. All scenario Envoys are started first and the runs are interleaved
(round-robin), so every ratio compares runs taken under the same machine load.

    bench.py run [--runs 5 --duration 5 --warmup 2 --connections 8] [--out bench/results.md]
    bench.py smoke      every scenario for about a second, checking each response under load
    bench.py memory     RSS after 10,000 and after 1,000,000 requests (scenarios 4 to 6)
    bench.py callgrind  instructions per request with Envoy under valgrind [--only KEY ...]
    bench.py routes     RSS and time to ready with 1,000, 10,000 and 100,000 routes, each with a per-route config
                        (three policies against the do-nothing module), and an RDS update replacing every route

Each scenario's response is checked (headers, status, rewritten body length) before it is measured,
and a run with any non-2xx response or socket error fails, so a broken scenario cannot be reported
as fast.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests/e2e"))

import envoy_harness as h  # noqa: E402

ENVOY_CPU = os.environ.get("BENCH_ENVOY_CPU", "0")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "1")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SMART_VALUE_JINJA = 'method={{ request_header(":method") }}&path={{ request_header(":path") }}'
SMART_VALUE_OPS = "method=%REQ(:METHOD)%&path=%REQ(:PATH)%"
PATH = "/bench/get?x=1"
BODY_PATH = "/body"


def request_body() -> bytes:
    """A 1 KiB JSON object: the three fields the templates read, plus messages the parse must cross."""
    doc = {"user": "alice", "model": "gpt-4o", "messages": [], "n": 3, "pad": ""}
    i = 0
    while len(json.dumps(doc, separators=(",", ":"))) < 1024 - 64:
        doc["messages"].append({"role": "user", "content": f"message number {i} with some text"})
        i += 1
    doc["pad"] = "x" * (1024 - len(json.dumps(doc, separators=(",", ":"))))
    text = json.dumps(doc, separators=(",", ":"))
    assert len(text) == 1024, len(text)
    return text.encode()


BODY = request_body()
# What both body transformations must send upstream for BODY.
NEW_BODY = b'{"user":"alice","model":"gpt-4o","n":3}'

# What scenario 8's functions give for PATH (`/bench/get?x=1`).
FUNCTIONS_LOAD = {"x-query": "1", "x-tenant": "get", "x-custom-transformed": "true"}

BODY_TEMPLATE = '{"user":"{{ user }}","model":"{{ model }}","n":{{ n }}}'

LUA_SMART = """
function envoy_on_request(handle)
  local h = handle:headers()
  handle:streamInfo():dynamicMetadata():set("bench", "smart",
    "method=" .. (h:get(":method") or "") .. "&path=" .. (h:get(":path") or ""))
end
function envoy_on_response(handle)
  local smart = handle:streamInfo():dynamicMetadata():get("bench")["smart"]
  handle:headers():replace("x-custom-transformed", "true")
  handle:headers():replace("x-smart-header", smart)
end
"""

# Envoy's Lua has no JSON library; string patterns pick the three fields, which is less work
# than the full parse the Rust filter does (so this comparison favours Lua).
LUA_BODY = """
function envoy_on_request(handle)
  local body = handle:body()
  local text = body:getBytes(0, body:length())
  local user = string.match(text, '"user"%s*:%s*"([^"]*)"') or ""
  local model = string.match(text, '"model"%s*:%s*"([^"]*)"') or ""
  local n = string.match(text, '"n"%s*:%s*(%d+)') or ""
  local new = '{"user":"' .. user .. '","model":"' .. model .. '","n":' .. n .. '}'
  body:setBytes(new)
  local h = handle:headers()
  h:replace("content-length", tostring(#new))
  h:replace("x-user", user)
  h:replace("x-model", model)
end
"""


def acl_config(rules: int = 1000) -> str:
    """1,000 deny rules over 10.0.0.0/8 prefixes plus the rule that lets loopback in."""
    cidrs = [f"10.{i // 256}.{i % 256}.0/24" for i in range(rules - 1)]
    return json.dumps({
        "defaultAction": "deny",
        "rules": [
            {"name": "blocked", "cidrs": cidrs, "action": "deny"},
            {"name": "loopback", "cidrs": ["127.0.0.0/8"], "action": "allow"},
        ],
    })


def route(cluster: str = "httpbun", prefix: str = "/", extra: dict | None = None) -> dict:
    r = {"match": {"prefix": prefix}, "route": {"cluster": cluster}}
    r.update(extra or {})
    return r


def header_mutation_filter() -> dict:
    def append(name, value):
        return {"append": {"header": {"key": name, "value": value},
                           "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"response_mutations": [
                append("x-custom-transformed", "true"),
                append("x-smart-header", SMART_VALUE_OPS),
            ]},
        },
    }


def lua_filter(code: str) -> dict:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": code},
        },
    }


def smart_rustformation() -> str:
    return json.dumps({"response": {"set": [
        {"name": "x-custom-transformed", "value": "true"},
        {"name": "x-smart-header", "value": SMART_VALUE_JINJA},
    ]}})


def functions_rustformation() -> str:
    """Two of the functions beyond kgateway, as a policy would use them: a query parameter and a
    regex capture from the path."""
    return json.dumps({"response": {"set": [
        {"name": "x-query", "value": '{{ query_param("x") }}'},
        {"name": "x-tenant", "value": '{{ regex_extract(request_header(":path"), "^/bench/([a-z]+)", 1) }}'},
    ]}})


def body_rustformation() -> str:
    return json.dumps({"request": {
        "body": {"parseAs": "AsJson", "value": BODY_TEMPLATE},
        "set": [{"name": "x-user", "value": "{{ user }}"}, {"name": "x-model", "value": "{{ model }}"}],
    }})


BARE_MODULE = "bare_module"


def bare_module_filter() -> dict:
    """The do-nothing module (crates/envoy-module/examples/bare_module.rs) as a listener filter."""
    f = h.module_filter("bare", "{}")
    f["typed_config"]["dynamic_module_config"]["name"] = BARE_MODULE
    return f


def disabled_rustformation() -> dict:
    return h.module_filter("rustformation", "{}", http_filter_name="dynamic_modules/simple_mutations",
                           disabled=True)


def with_per_route(name: str, config: str, prefix: str = "/") -> dict:
    return route(prefix=prefix, extra={"typed_per_filter_config": {
        "dynamic_modules/simple_mutations": h.per_route(name, config)}})


# ---------------------------------------------------------------- checks of each scenario's answer


def expect_smart(resp: h.Response, method: str = "GET", path: str = PATH) -> list[str]:
    errors = []
    if resp.status != 200:
        errors.append(f"status {resp.status}")
    if resp.header("x-custom-transformed") != "true":
        errors.append(f"x-custom-transformed={resp.header('x-custom-transformed')!r}")
    want = f"method={method}&path={path}"
    if resp.header("x-smart-header") != want:
        errors.append(f"x-smart-header={resp.header('x-smart-header')!r}, want {want!r}")
    return errors


def expect_functions(resp: h.Response) -> list[str]:
    errors = [] if resp.status == 200 else [f"status {resp.status}"]
    for name, want in FUNCTIONS_LOAD.items():
        if resp.header(name) != want:
            errors.append(f"{name}={resp.header(name)!r}, want {want!r}")
    return errors


def expect_plain(resp: h.Response) -> list[str]:
    errors = [] if resp.status == 200 else [f"status {resp.status}"]
    for name in ("x-smart-header", "x-custom-transformed"):
        if resp.header(name) is not None:
            errors.append(f"unexpected {name}")
    if resp.header("x-upstream") != "direct":
        errors.append("response did not come from the bench upstream")
    return errors


def expect_body(resp: h.Response) -> list[str]:
    # The upstream echoes what it received in x-echo-* headers.
    errors = [] if resp.status == 200 else [f"status {resp.status}"]
    want = {"x-echo-user": "alice", "x-echo-model": "gpt-4o", "x-echo-length": str(len(NEW_BODY)),
            "x-echo-bytes": str(len(NEW_BODY))}
    for name, value in want.items():
        if resp.header(name) != value:
            errors.append(f"{name}={resp.header(name)!r}, want {value!r}")
    return errors


def expect_post_plain(resp: h.Response) -> list[str]:
    errors = [] if resp.status == 200 else [f"status {resp.status}"]
    if resp.header("x-echo-bytes") != str(len(BODY)):
        errors.append(f"x-echo-bytes={resp.header('x-echo-bytes')!r}, want {len(BODY)}")
    return errors


@dataclass
class Scenario:
    key: str
    title: str
    filters: list[dict]
    routes: list[dict]
    check: Callable[[h.Response], list[str]]
    method: str = "GET"
    path: str = PATH
    body: bytes | None = None
    # Expected response headers for the under-load check of the smoke (wrk's Lua).
    load_headers: dict[str, str] = field(default_factory=dict)
    # The no-filter scenario doing the same request, for the "over baseline" figures.
    baseline: str = "1-baseline"
    # Extra environment of the Envoy under test.
    env: dict[str, str] = field(default_factory=dict)
    envoy: h.Envoy | None = None

    def probe(self) -> h.Response:
        headers = {"content-type": "application/json"} if self.body is not None else None
        return self.envoy.request(self.method, self.path, headers=headers, body=self.body)


def scenarios() -> list[Scenario]:
    smart_load = {"x-custom-transformed": "true", "x-smart-header": f"method=GET&path={PATH}"}
    body_load = {"x-echo-user": "alice", "x-echo-model": "gpt-4o", "x-echo-length": str(len(NEW_BODY)),
                 "x-echo-bytes": str(len(NEW_BODY))}
    post = dict(method="POST", path=BODY_PATH, body=BODY, check=expect_body, load_headers=body_load,
                baseline="6-baseline-post")
    return [
        Scenario("1-baseline", "1 baseline (no filter)", [], [route()], expect_plain,
                 load_headers={"x-upstream": "direct"}),
        # What any dynamic-module filter costs before it does anything: our filter with nothing to
        # do (no transformation, marker off) still has Envoy create it and call its hooks.
        Scenario("1b-module-floor", "1b module floor: rustformation `{}`, marker off",
                 [h.module_filter("rustformation", "{}")], [route()], expect_plain,
                 load_headers={"x-upstream": "direct"}, env={"RUSTFORMATION_MARKER_HEADER": "off"}),
        # The do-nothing module: every hook an immediate return, no SDK on the stream path. The
        # difference between 1b and 1c is what our SDK costs per stream.
        Scenario("1c-bare", "1c do-nothing module (every hook returns at once)", [bare_module_filter()],
                 [route()], expect_plain, load_headers={"x-upstream": "direct"}),
        Scenario("2-native", "2 native header_mutation", [header_mutation_filter()], [route()], expect_smart,
                 load_headers=smart_load),
        Scenario("3-lua", "3 Lua headers", [lua_filter(LUA_SMART)], [route()], expect_smart,
                 load_headers=smart_load),
        Scenario("4-smart", "4 my-smart-header `{}`", [h.module_filter("my-smart-header", "{}")], [route()],
                 expect_smart, load_headers=smart_load),
        Scenario("5-rustformation", "5 rustformation per-route (Jinja)", [disabled_rustformation()],
                 [with_per_route("rustformation", smart_rustformation())], expect_smart, load_headers=smart_load),
        Scenario("6-baseline-post", "6 baseline: the same POST, no filter", [], [route()], method="POST",
                 path=BODY_PATH, body=BODY, check=expect_post_plain, load_headers={"x-echo-bytes": str(len(BODY))}),
        Scenario("6-body-rust", "6 body JSON, rustformation", [disabled_rustformation()],
                 [with_per_route("rustformation", body_rustformation())], **post),
        Scenario("6-body-lua", "6 body JSON, Lua", [lua_filter(LUA_BODY)], [route()], **post),
        Scenario("8-functions", "8 rustformation: query_param and regex_extract", [disabled_rustformation()],
                 [with_per_route("rustformation", functions_rustformation())], expect_functions,
                 load_headers=FUNCTIONS_LOAD),
        Scenario("7-acl", "7 http-acl 1,000 CIDRs (allowed)", [h.module_filter("http-acl", acl_config())],
                 [route()], expect_plain, load_headers={"x-upstream": "direct"}),
    ] + kgateway_scenarios(smart_load)


# kgateway v2.3's own module, built for Envoy 1.37.0 (the only Envoy it loads in), beside the
# repository as the differential suite finds it.
KGATEWAY_MODULE = pathlib.Path(os.environ.get(
    "KGATEWAY_REFERENCE_MODULE", str(REPO.parent / "shared/reference/kgateway-v2.3/librust_module.so")))


def kgateway_scenarios(smart_load: dict[str, str]) -> list[Scenario]:
    """Scenario 5's policy in kgateway's own module, when its build is there and Envoy is 1.37.0."""
    if h.ENVOY_VERSION != "1.37.0" or not KGATEWAY_MODULE.exists():
        return []
    return [Scenario("9-kgateway", "9 kgateway v2.3's module, scenario 5's policy", [disabled_rustformation()],
                     [with_per_route("rustformation", smart_rustformation())], expect_smart,
                     load_headers=smart_load,
                     env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(KGATEWAY_MODULE.parent)})]


# ---------------------------------------------------------------- processes


def taskset(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1 else []


def upstream_config() -> dict:
    """An Envoy that answers every request itself; /body also echoes what the body filters sent."""
    def echo(name, value):
        return {"header": {"key": name, "value": value}}
    routes = [
        {"match": {"prefix": BODY_PATH}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
         "response_headers_to_add": [echo("x-echo-user", "%REQ(x-user)%"), echo("x-echo-model", "%REQ(x-model)%"),
                                     echo("x-echo-length", "%REQ(content-length)%"),
                                     echo("x-echo-bytes", "%BYTES_RECEIVED%")]},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}},
    ]
    # The buffer filter makes the upstream read the whole request body before it answers, so
    # keep-alive holds and %BYTES_RECEIVED% is the body it got.
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 65536}}
    config = h.gateway_config(0, [buffer], routes)
    config["static_resources"]["clusters"] = []
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "upstream"
    hcm["route_config"]["response_headers_to_add"] = [echo("x-upstream", "direct")]
    return config


def start(config: dict, cpu: str, wrapper: list[str] | None = None, ready_within: float = 60,
          env: dict[str, str] | None = None) -> h.Envoy:
    """Envoy on free loopback ports (as the e2e harness starts it), pinned and optionally wrapped."""
    config = copy.deepcopy(config)
    admin_port, port = h.free_port(), h.free_port()
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    config["static_resources"]["listeners"][0]["address"] = {
        "socket_address": {"address": "127.0.0.1", "port_value": port}}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-envoy-"))
    # JSON (a YAML subset Envoy reads by the extension): written in a second for 100,000 routes.
    config_path = workdir / "envoy.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "envoy.log"
    args = taskset(cpu) + (wrapper or []) + [
        h.ENVOY_BIN, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]
    # A scenario's own environment comes last: it may name another module directory.
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": module_dir(), **(env or {})}
    with open(log_path, "wb") as log_file:
        # taskset and valgrind exec the target, so the pid is Envoy's own.
        spawned = time.monotonic()
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    envoy = h.Envoy(proc, port, admin_port, log_path, config_path, extra={"spawned": spawned})
    deadline = time.time() + ready_within
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}:\n{envoy.logs()[-4000:]}")
        try:
            if h.request(admin_port, "GET", "/ready", timeout=1).status == 200:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    envoy.extra["ready"] = time.monotonic()
                    return envoy
        except OSError:
            pass
        time.sleep(0.05)
    envoy.stop()
    raise RuntimeError(f"envoy did not become ready within {ready_within} s:\n{envoy.logs()[-4000:]}")


_MODULE_COPY: list[str] = []


def module_dir() -> str:
    """A private copy of the built module, so a rebuild during the run cannot swap it mid-way."""
    if not _MODULE_COPY:
        src = pathlib.Path(h.MODULE_DIR) / "librust_module.so"
        dst = pathlib.Path(tempfile.mkdtemp(prefix="bench-module-"))
        shutil.copy2(src, dst / "librust_module.so")
        bare = pathlib.Path(h.MODULE_DIR) / f"lib{BARE_MODULE}.so"
        if bare.exists():
            shutil.copy2(bare, dst / bare.name)
        _MODULE_COPY.append(str(dst))
    return _MODULE_COPY[0]


def envoy_pid(envoy: h.Envoy) -> int:
    """The Envoy process itself (taskset and valgrind exec, so it is the same pid)."""
    return envoy.proc.pid


def cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_all(selected: list[Scenario]) -> h.Envoy:
    upstream = start(upstream_config(), CLIENT_CPU)
    for s in selected:
        config = h.gateway_config(upstream.port, s.filters, s.routes)
        # Keep-alive towards the upstream; one worker means one upstream connection pool.
        s.envoy = start(config, ENVOY_CPU, env=s.env)
    return upstream


def stop_all(upstream: h.Envoy | None, selected: list[Scenario]):
    for s in selected:
        if s.envoy:
            s.envoy.stop()
    if upstream:
        upstream.stop()


def check_all(selected: list[Scenario]):
    failures = []
    for s in selected:
        errors = s.check(s.probe())
        if errors:
            failures.append(f"{s.key}: {'; '.join(errors)}")
    if failures:
        raise SystemExit("scenario check failed:\n  " + "\n  ".join(failures))


# ---------------------------------------------------------------- load generation


def wrk_script(s: Scenario, verify: bool) -> str:
    lines = []
    if s.body is not None:
        lines.append(f'wrk.method = "{s.method}"')
        lines.append("wrk.body = " + lua_string(s.body.decode()))
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    if verify:
        # Checked on every response under load; slower, so only in the smoke.
        checks = " or ".join(f'headers["{k}"] ~= {lua_string(v)}' for k, v in s.load_headers.items())
        lines += [
            "bad = 0",
            "function response(status, headers, body)",
            f"  if status ~= 200 or {checks} then bad = bad + 1 end",
            "end",
            "local threads = {}",
            "function setup(thread) table.insert(threads, thread) end",
            "function done(summary, latency, requests)",
            "  local n = 0",
            "  for _, t in ipairs(threads) do n = n + t:get(\"bad\") end",
            '  io.write("BAD_RESPONSES " .. n .. "\\n")',
            "end",
        ]
    return "\n".join(lines) + "\n"


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class Run:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    envoy_cpu_util: float
    bad: int = 0


def wrk(s: Scenario, duration: float, connections: int, verify: bool = False) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(wrk_script(s, verify))
        script = f.name
    url = f"http://127.0.0.1:{s.envoy.port}{s.path}"
    cmd = taskset(CLIENT_CPU) + ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", script, url]
    pid = envoy_pid(s.envoy)
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    t1, c1 = time.monotonic(), cpu_ticks(pid)
    os.unlink(script)
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * (1e-3 if m.group(3) == "ms" else 1)
    for bad in ("Non-2xx or 3xx responses", "Socket errors"):
        if bad in out:
            raise RuntimeError(f"{s.key}: wrk reported '{bad}':\n{out}")
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))

    def ms(v: str) -> float:
        num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
        return float(num) * UNIT[unit]

    bad_match = re.search(r"BAD_RESPONSES (\d+)", out)
    cpu_s = (c1 - c0) / CLK_TCK
    return Run(requests, seconds, requests / seconds, ms(pct["50"]), ms(pct["99"]),
               cpu_s / requests * 1e6 if requests else 0.0, cpu_s / (t1 - t0),
               int(bad_match.group(1)) if bad_match else 0)


# ---------------------------------------------------------------- report


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    envoy_version = subprocess.run([h.ENVOY_BIN, "--version"], capture_output=True, text=True).stdout.strip()
    envoy_version = re.search(r"version: (\S+)", envoy_version)
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "envoy": envoy_version.group(1) if envoy_version else "unknown",
        "wrk": wrk_version.strip(),
        "rustc": rustc,
        "module": str(pathlib.Path(h.MODULE_DIR) / "librust_module.so"),
    }


def median_run(runs: list[Run]) -> dict[str, float]:
    return {k: statistics.median(getattr(r, k) for r in runs)
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "envoy_cpu_util")}


def spread(runs: list[Run]) -> float:
    """Relative spread of requests/s across runs (max-min over median), the run's noise."""
    values = [r.rps for r in runs]
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def table(results: dict[str, list[Run]], selected: list[Scenario]) -> str:
    medians = {s.key: median_run(results[s.key]) for s in selected}
    rows = [
        "| scenario | req/s | x base | p50 ms | x base | p99 ms | x base | CPU µs/req | x base | Envoy CPU | rps spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in selected:
        m = medians[s.key]
        base = medians.get(s.baseline, medians[selected[0].key])
        rows.append(
            f"| {s.title} | {m['rps']:,.0f} | {m['rps'] / base['rps']:.3f} | {m['p50_ms']:.3f} | "
            f"{m['p50_ms'] / base['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['p99_ms'] / base['p99_ms']:.3f} | "
            f"{m['cpu_us_per_req']:.1f} | {m['cpu_us_per_req'] / base['cpu_us_per_req']:.3f} | "
            f"{m['envoy_cpu_util'] * 100:.0f}% | {spread(results[s.key]) * 100:.1f}% |"
        )
    return "\n".join(rows)


def load_line(before: tuple, after: tuple) -> str:
    return (f"load average {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} before the run, "
            f"{after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} after")


# ---------------------------------------------------------------- commands


def report(md: list[str], out: str | None) -> None:
    """Prints a result table, and writes it to `out` when given."""
    text = "\n".join(md)
    if out:
        pathlib.Path(out).write_text(text)
        print(f"wrote {out}")
    print(text)


def cmd_run(args):
    selected = [s for s in scenarios() if not args.only or any(s.key.startswith(o) for o in args.only)]
    load_before = os.getloadavg()
    upstream = None
    try:
        upstream = start_all(selected)
        check_all(selected)
        for s in selected:
            wrk(s, args.warmup, args.connections)
        results: dict[str, list[Run]] = {s.key: [] for s in selected}
        for i in range(args.runs):
            for s in selected:
                run = wrk(s, args.duration, args.connections)
                results[s.key].append(run)
                print(f"run {i + 1}/{args.runs} {s.key:18} {run.rps:9,.0f} req/s  p50 {run.p50_ms:.3f} ms  "
                      f"p99 {run.p99_ms:.3f} ms  {run.cpu_us_per_req:.1f} µs CPU/req  "
                      f"(Envoy CPU {run.envoy_cpu_util * 100:.0f}%)", flush=True)
        check_all(selected)
    finally:
        stop_all(upstream, selected)
    load_after = os.getloadavg()
    facts = machine_facts()
    md = [
        "# Benchmark results",
        "",
        f"Taken {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `make bench` "
        f"({args.runs} interleaved runs of {args.duration:g} s per scenario after a {args.warmup:g} s warm-up, "
        f"wrk 1 thread {args.connections} keep-alive connections, medians).",
        "",
        table(results, selected),
        "",
        "x base: ratio to the no-filter run of the same request in the same session (scenario 1; for the "
        "scenario 6 rows, the same POST without a filter); req/s: higher is better, the rest: lower is better. "
        "CPU µs/req: the Envoy process's user+system CPU time over the run divided by the requests. "
        "Envoy CPU: its share of one core during the run. rps spread: (max - min) / median of the runs.",
        "",
        "- machine: " + facts["cpu"] + f", kernel {facts['kernel']}; Envoy under test pinned to CPU {ENVOY_CPU}, "
        f"wrk and the upstream Envoy to CPU {CLIENT_CPU}",
        f"- Envoy {facts['envoy']} (`--concurrency 1`), {facts['wrk']}, {facts['rustc']}",
        "- " + load_line(load_before, load_after),
        "",
    ]
    report(md, args.out)


def cmd_smoke(args):
    """Each scenario briefly under load, every response checked, so the benchmark cannot rot."""
    selected = scenarios()
    upstream = None
    failures = []
    try:
        upstream = start_all(selected)
        check_all(selected)
        for s in selected:
            run = wrk(s, args.duration, 2, verify=True)
            ok = run.requests > 0 and run.bad == 0
            print(f"{'ok ' if ok else 'BAD'} {s.key:18} {run.requests:7} requests, {run.bad} wrong responses")
            if not ok:
                failures.append(s.key)
    finally:
        stop_all(upstream, selected)
    if failures:
        raise SystemExit(f"bench smoke failed: {', '.join(failures)}")
    print(f"{len(selected)} passed, 0 failed")


def requests_total(envoy: h.Envoy) -> int:
    return envoy.stats().get("http.e2e.downstream_rq_total", 0)


def drive_until(s: Scenario, target: int, rps_guess: float, connections: int) -> int:
    while (done := requests_total(s.envoy)) < target:
        left = target - done
        wrk(s, max(1.0, min(30.0, left / max(rps_guess, 1000.0))), connections)
    return requests_total(s.envoy)


def cmd_memory(args):
    keys = ("4-smart", "5-rustformation", "6-body-rust")
    selected = [s for s in scenarios() if s.key in keys]
    upstream = None
    rows = ["| scenario | requests | RSS at 10k (KiB) | requests | RSS at end (KiB) | growth |", "|---|---:|---:|---:|---:|---:|"]
    worst = 0.0
    try:
        upstream = start_all(selected)
        check_all(selected)
        for s in selected:
            first = wrk(s, 1.0, args.connections)
            n1 = drive_until(s, 10_000, first.rps, args.connections)
            rss1 = rss_kib(envoy_pid(s.envoy))
            n2 = drive_until(s, args.requests, first.rps, args.connections)
            rss2 = rss_kib(envoy_pid(s.envoy))
            growth = (rss2 - rss1) / rss1
            worst = max(worst, growth)
            rows.append(f"| {s.title} | {n1:,} | {rss1:,} | {n2:,} | {rss2:,} | {growth * 100:+.1f}% |")
            print(rows[-1], flush=True)
        check_all(selected)
    finally:
        stop_all(upstream, selected)
    md = ["## Memory", "", "\n".join(rows), "",
          f"Envoy `VmRSS` from /proc after the first ~10,000 requests and after {args.requests:,}; "
          "requests counted by Envoy's `downstream_rq_total`.", ""]
    report(md, args.out)
    if worst > 0.05:
        raise SystemExit(f"RSS grew by {worst * 100:.1f}% (more than 5%)")


def callgrind_threads(out_file: pathlib.Path) -> list[int]:
    """Instructions of each thread (one dump file per thread with --separate-threads=yes)."""
    totals = []
    for path in sorted(out_file.parent.glob(out_file.name + "*")):
        lines = path.read_text(errors="replace").splitlines()
        counts = [int(line.split()[1]) for line in lines if line.startswith(("totals:", "summary:"))]
        if counts:
            totals.append(max(counts))
    return totals


def keepalive_requests(port: int, s: Scenario, n: int):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"} if s.body is not None else {}
    for _ in range(n):
        conn.request(s.method, s.path, body=s.body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{s.key}: status {resp.status}")
    conn.close()


def cmd_callgrind(args):
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    keys = args.only or [s.key for s in scenarios()]
    selected = [s for s in scenarios() if s.key in keys]
    upstream = start(upstream_config(), CLIENT_CPU)
    rows = ["| scenario | worker instructions/request | x its baseline | over its baseline | x native | "
            "over the do-nothing module | all threads | over |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    per_req, all_threads = {}, {}
    try:
        for s in selected:
            work = pathlib.Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
            out = work / "callgrind.out"
            wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                       f"--callgrind-out-file={out}", "--log-file=" + str(work / "valgrind.log")]
            config = h.gateway_config(upstream.port, s.filters, s.routes)
            s.envoy = start(config, ENVOY_CPU, wrapper=wrapper, ready_within=300, env=s.env)
            try:
                errors = s.check(s.probe())
                if errors:
                    raise SystemExit(f"{s.key}: {'; '.join(errors)}")
                keepalive_requests(s.envoy.port, s, args.warmup)
                subprocess.run(["callgrind_control", "-i", "on", str(envoy_pid(s.envoy))], check=True,
                               capture_output=True)
                keepalive_requests(s.envoy.port, s, args.requests)
                subprocess.run(["callgrind_control", "-i", "off", str(envoy_pid(s.envoy))], check=True,
                               capture_output=True)
            finally:
                s.envoy.stop()
            threads = callgrind_threads(out)
            # The worker thread serves the requests; the main thread's timers (stats flush) add
            # noise that depends on how long the run took, so it is reported apart.
            worker, everything = max(threads), sum(threads)
            per_req[s.key] = worker / args.requests
            all_threads[s.key] = everything / args.requests
            print(f"{s.key:18} {worker:,} worker instructions, {everything:,} in all threads over "
                  f"{args.requests} requests ({out})", flush=True)
    finally:
        upstream.stop()
    native, bare = per_req.get("2-native"), per_req.get("1c-bare")
    for s in selected:
        v = per_req[s.key]
        base = per_req.get(s.baseline, per_req[selected[0].key])
        all_base = all_threads.get(s.baseline, all_threads[selected[0].key])
        # Against native and the floor: the added cost over the no-filter baseline of each, for the
        # GET scenarios (the POST rows have their own baseline).
        same_request = s.baseline == "1-baseline"
        first = per_req.get("1-baseline")
        x_native = (f"{(v - first) / (native - first):.2f}" if same_request and first and native
                    and native > first and s.key != "1-baseline" else "")
        over_bare = f"{v - bare:+,.0f}" if same_request and bare is not None else ""
        rows.append(f"| {s.title} | {v:,.0f} | {v / base:.3f} | {v - base:+,.0f} | {x_native} | {over_bare} | "
                    f"{all_threads[s.key]:,.0f} | {all_threads[s.key] - all_base:+,.0f} |")
    md = ["## Instructions per request", "", "\n".join(rows), "",
          f"`valgrind --tool=callgrind --instr-atstart=no` on the Envoy under test; collection switched on "
          f"with `callgrind_control -i on` after {args.warmup} warm-up requests, then {args.requests} keep-alive "
          "requests from one connection. Worker: the thread that serves the requests; all threads adds the main "
          "thread, whose timers make it noisier. Its baseline: scenario 1, or for the "
          "scenario 6 rows the same POST without a filter. x native: the scenario's instructions over the "
          "baseline divided by native `header_mutation`'s (2); over the do-nothing module: against scenario 1c "
          "(GET scenarios, when 2 and 1c are in the run).", ""]
    report(md, args.out)


ROUTE_POLICY = json.dumps({
    "request": {"set": [
        {"name": "x-route-path", "value": '{{ request_header(":path") }}'},
        {"name": "x-route-method", "value": '{{ request_header(":method") | lower }}'},
    ]},
    "response": {"set": [{"name": "x-route", "value": "routes"}]},
})


def issue_policy(route: int | None = None, version: str | None = None) -> str:
    """Issue 24's policy: three real templates (two request headers, one response header). With a
    route number, the number is inside the `if` template, so every route's policy differs; a
    version adds a literal response header `x-version`."""
    mark = "" if route is None else f"-{route}"
    response = [{"name": "x-resp", "value": '{{ header(":status") }}-{{ substring(request_header(":path"), 0, 5) }}'}]
    if version:
        response.append({"name": "x-version", "value": version})
    return json.dumps({
        "request": {"set": [
            {"name": "x-route", "value": 'r{{ request_header("x-a") }}'},
            {"name": "x-b", "value": '{% if request_header("x-c") == "1" %}one' + mark + '{% else %}other{% endif %}'},
        ]},
        "response": {"set": response},
    })


# (key, title, per-route config of route i): each measured with our module and with the do-nothing
# module given the same bytes (Envoy keeps every route's config bytes too: the difference is ours).
ROUTE_POLICIES: list[tuple[str, str, Callable[[int], str]]] = [
    ("shared", "issue 24's three-template policy, the same on every route", lambda i: ISSUE_POLICY),
    ("distinct", "the same with the route's number inside a template (every route distinct)",
     lambda i: issue_policy(i)),
    ("today", "the previous three-value policy (lowered to header reads), the same on every route",
     lambda i: ROUTE_POLICY),
]
ISSUE_POLICY = issue_policy()


def routes_table(kind: str, n: int, policy: Callable[[int], str] | None) -> list[dict]:
    routes = []
    for i in range(n):
        r = route(prefix=f"/r{i}/")
        if policy is not None:
            per = h.per_route("rustformation", policy(i))
            if kind == "bare":
                per["dynamic_module_config"]["name"] = BARE_MODULE
            r["typed_per_filter_config"] = {"dynamic_modules/simple_mutations": per}
        routes.append(r)
    return routes


def routes_config(upstream_port: int, kind: str, n: int, policy: Callable[[int], str] | None) -> dict:
    """`n` routes `/r<i>/`, each with a per-route config of `kind`: none, the do-nothing module's,
    or ours with `policy(i)`."""
    filters = []
    if kind == "bare":
        filters = [dict(bare_module_filter(), name="dynamic_modules/simple_mutations", disabled=True)]
    elif kind != "none":
        filters = [disabled_rustformation()]
    return h.gateway_config(upstream_port, filters, routes_table(kind, n, policy))


def check_route_response(kind: str, resp: h.Response, path: str) -> bool:
    if resp.status != 200:
        return False
    if kind in ("none", "bare"):
        return resp.header("x-route") is None and resp.header("x-resp") is None
    if kind == "today":
        return resp.header("x-route") == "routes"
    return resp.header("x-resp") == f"200-{path[:5]}"


def tcmalloc_allocated(envoy: h.Envoy) -> int:
    """Bytes the process's heap has handed out and not taken back (admin /memory)."""
    return int(h.request(envoy.admin_port, "GET", "/memory").json()["allocated"])


def rds_update(upstream_port: int, n: int) -> dict:
    """Envoy with `n` routes from a file (RDS), each with its own policy; while clients send requests
    over all routes, every route is replaced twice (new bytes each time). Counts the requests and
    failures, and takes RSS and the heap in use before, at the peak, and after."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-rds-"))
    rds_path = workdir / "routes.json"

    def publish(version: str):
        table = routes_table("ours", n, lambda i: issue_policy(i, version))
        tmp = rds_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": table}]}]}))
        os.rename(tmp, rds_path)

    publish("v1")
    config = h.gateway_config(upstream_port, [disabled_rustformation()], [])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    hcm["rds"] = {"route_config_name": "routes",
                  "config_source": {"resource_api_version": "V3", "path_config_source": {"path": str(rds_path)}}}
    config["node"] = {"id": "bench", "cluster": "bench"}
    envoy = start(config, ENVOY_CPU, ready_within=600)
    pid = envoy_pid(envoy)
    out: dict = {"routes": n}
    try:
        time.sleep(1)
        out["rss_before"], out["heap_before"] = rss_kib(pid), tcmalloc_allocated(envoy)
        stop = threading.Event()
        seen: list[tuple[float, str | None]] = []
        failures: list[str] = []
        peak = [out["rss_before"]]

        def client(k: int):
            i = k
            while not stop.is_set():
                route_i = (i * 7919) % n
                path = f"/r{route_i}/x"
                try:
                    resp = envoy.request("GET", path, headers={"x-c": "1"}, timeout=30)
                    if not check_route_response("shared", resp, path):
                        failures.append(f"{path}: {resp.status} {resp.header('x-resp')!r}")
                    seen.append((time.monotonic(), resp.header("x-version")))
                except OSError as e:
                    failures.append(f"{path}: {e!r}")
                i += 1

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(pid))
                time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)] + [threading.Thread(target=sampler)]
        for t in threads:
            t.start()
        try:
            time.sleep(2)
            for version in ("v2", "v3"):
                t0 = time.monotonic()
                publish(version)
                deadline = t0 + 600
                while not any(v == version for _, v in seen[-20:]):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"RDS update to {version} not applied within 600 s")
                    time.sleep(0.1)
                out[f"applied_{version}"] = time.monotonic() - t0
                time.sleep(3)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        time.sleep(3)
        out["rss_after"], out["heap_after"] = rss_kib(pid), tcmalloc_allocated(envoy)
        out["rss_peak"] = peak[0]
        out["requests"], out["failures"] = len(seen) + len(failures), failures
        out["versions"] = sorted({v for _, v in seen if v})
        if not envoy.alive():
            raise SystemExit("envoy died during the route updates")
    finally:
        envoy.stop()
    return out


def measure_routes(upstream_port: int, kind: str, n: int, policy: Callable[[int], str] | None,
                   check: str) -> tuple[int, int, float, float]:
    """(RSS KiB, heap in use bytes, seconds to ready, CPU seconds to ready) of Envoy with `n` routes."""
    envoy = start(routes_config(upstream_port, kind, n, policy), ENVOY_CPU, ready_within=1200)
    ready = envoy.extra["ready"] - envoy.extra["spawned"]
    cpu = cpu_ticks(envoy_pid(envoy)) / CLK_TCK
    try:
        path = f"/r{n - 1}/x"
        resp = envoy.request("GET", path, headers={"x-a": "A", "x-c": "1"})
        if not check_route_response(check, resp, path):
            raise SystemExit(f"routes {kind} {check} {n}: status {resp.status}, x-route={resp.header('x-route')!r}, "
                             f"x-resp={resp.header('x-resp')!r}")
        time.sleep(1)
        return rss_kib(envoy_pid(envoy)), tcmalloc_allocated(envoy), ready, cpu
    finally:
        envoy.stop()


def cmd_routes(args):
    """RSS after start and time to ready with many routes, each with its own per-route config; then
    an RDS update replacing every route while requests flow."""
    policies = [p for p in ROUTE_POLICIES if not args.only or p[0] in args.only]
    upstream = start(upstream_config(), CLIENT_CPU)
    none: dict[int, tuple[int, int, float, float]] = {}
    results: dict[tuple[str, str, int], tuple[int, int, float, float]] = {}
    rds = None

    def median_of(runs: list[tuple[int, int, float, float]]) -> tuple[int, int, float, float]:
        # Each figure's own median: one slow start (the machine's, not the module's) moves none.
        return tuple(statistics.median(r[i] for r in runs) for i in range(4))  # type: ignore[return-value]

    try:
        for n in args.routes:
            none[n] = measure_routes(upstream.port, "none", n, None, "none")
            print(f"{n:>7} routes, no per-route config: RSS {none[n][0] / 1024:7.1f} MiB, "
                  f"heap {none[n][1] / 2**20:7.1f} MiB, ready in {none[n][2]:.2f} s, CPU {none[n][3]:.2f} s", flush=True)
            for key, _, policy in policies:
                runs: dict[str, list[tuple[int, int, float, float]]] = {"bare": [], "ours": []}
                # The two modules take turns, so a slow stretch of the machine falls on both.
                for _ in range(args.repeats):
                    for module in ("bare", "ours"):
                        r = measure_routes(upstream.port, module, n, policy, "bare" if module == "bare" else key)
                        runs[module].append(r)
                        print(f"{n:>7} routes, {key:8} {module}: RSS {r[0] / 1024:7.1f} MiB, "
                              f"heap {r[1] / 2**20:7.1f} MiB, ready in {r[2]:.2f} s, CPU {r[3]:.2f} s", flush=True)
                for module in ("bare", "ours"):
                    results[(key, module, n)] = median_of(runs[module])
        if args.rds_routes:
            rds = rds_update(upstream.port, args.rds_routes)
            print(f"RDS update: { {k: v for k, v in rds.items() if k != 'failures'} }, "
                  f"{len(rds['failures'])} failures", flush=True)
    finally:
        upstream.stop()
    rows = ["| routes | per-route policy | RSS MiB (do-nothing module) | ours over it, per route: RSS | heap in use | "
            "time to ready s (do-nothing module) | x the do-nothing module | CPU s to ready (do-nothing module) | x |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in args.routes:
        rows.append(f"| {n:,} | no per-route config | {none[n][0] / 1024:.1f} | | | {none[n][2]:.2f} | | "
                    f"{none[n][3]:.2f} | |")
        for key, title, _ in policies:
            ours, bare = results[(key, "ours", n)], results[(key, "bare", n)]
            rows.append(f"| {n:,} | {title} | {ours[0] / 1024:.1f} ({bare[0] / 1024:.1f}) | "
                        f"{(ours[0] - bare[0]) / n:+.2f} KiB | {(ours[1] - bare[1]) / 1024 / n:+.2f} KiB | "
                        f"{ours[2]:.2f} ({bare[2]:.2f}) | {ours[2] / bare[2]:.2f} | {ours[3]:.2f} ({bare[3]:.2f}) | "
                        f"{ours[3] / max(bare[3], 0.01):.2f} |")
    md = ["## Routes", "", "\n".join(rows), "",
          "Envoy (`--concurrency 1`) with N routes `/r<i>/`, each with a `DynamicModuleFilterPerRoute`; each policy "
          "is measured with our module and with the do-nothing module (crates/envoy-module/examples/bare_module.rs) "
          "given the same config bytes, since Envoy keeps every route's bytes itself. Issue 24's policy: `"
          + ISSUE_POLICY.replace("|", "\\|") + "`; distinct: the route's number inside the `if` template "
          "(`one-<i>`); the previous policy: `" + ROUTE_POLICY.replace("|", "\\|") + "`. `VmRSS` and the heap in "
          "use (tcmalloc's `allocated`, admin `/memory`) one second after the admin `/ready` answers and one checked "
          "request on the last route; time to ready from starting the Envoy process to that answer (polled every "
          "50 ms; the config file, JSON, is written before), and the CPU time (user + system) Envoy used until then "
          f"(less sensitive to the load of the shared machine). Each policy: the median of {args.repeats} starts per "
          "module, the two modules taking turns.", ""]
    if rds:
        mib = lambda k: rds[k] / 1024  # noqa: E731
        md += ["### Route update (RDS) replacing every route under load", "",
               f"{rds['routes']:,} routes from a file (RDS), each with issue 24's policy with its number inside "
               "a template and a version header; two clients send requests over all routes (a new connection "
               "each) while the file is replaced twice (every route's policy changes each time: v1 to v2 to v3). "
               "Before: one second after ready; after: three seconds after the clients stopped.", "",
               "| requests | failed | versions seen | update applied after s (v2, v3) | RSS MiB before / peak / "
               "after | heap in use MiB before / after |", "|---:|---:|---|---|---|---|",
               f"| {rds['requests']:,} | {len(rds['failures'])} | {', '.join(rds['versions'])} | "
               f"{rds['applied_v2']:.1f}, {rds['applied_v3']:.1f} | {mib('rss_before'):.1f} / {mib('rss_peak'):.1f} / "
               f"{mib('rss_after'):.1f} | {rds['heap_before'] / 2**20:.1f} / {rds['heap_after'] / 2**20:.1f} |", ""]
        if rds["failures"]:
            md += ["Failures (first 5): " + "; ".join(rds["failures"][:5]), ""]
    report(md, args.out)
    if rds and rds["failures"]:
        raise SystemExit(f"{len(rds['failures'])} requests failed during the route updates")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--duration", type=float, default=5)
    r.add_argument("--warmup", type=float, default=2)
    r.add_argument("--connections", type=int, default=8)
    r.add_argument("--only", nargs="*")
    r.add_argument("--out")
    sm = sub.add_parser("smoke")
    sm.add_argument("--duration", type=float, default=1)
    m = sub.add_parser("memory")
    m.add_argument("--requests", type=int, default=1_000_000)
    m.add_argument("--connections", type=int, default=8)
    m.add_argument("--out")
    c = sub.add_parser("callgrind")
    c.add_argument("--requests", type=int, default=500)
    c.add_argument("--warmup", type=int, default=200)
    c.add_argument("--only", nargs="*", help="scenario keys (default: all)")
    c.add_argument("--out")
    rt = sub.add_parser("routes")
    rt.add_argument("--routes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    rt.add_argument("--only", nargs="*", help="policies: " + " ".join(k for k, _, _ in ROUTE_POLICIES))
    rt.add_argument("--rds-routes", type=int, default=10_000, help="routes in the RDS update (0: skip it)")
    rt.add_argument("--repeats", type=int, default=3, help="starts per module and policy (medians reported)")
    rt.add_argument("--out")
    args = p.parse_args()
    {"run": cmd_run, "smoke": cmd_smoke, "memory": cmd_memory, "callgrind": cmd_callgrind,
     "routes": cmd_routes}[args.cmd](args)


if __name__ == "__main__":
    main()
