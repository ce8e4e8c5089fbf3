"""Start the real Envoy (with the built librust_module.so) and the httpbun-compatible upstream.

Everything runs on loopback with ports the OS hands out, so tests never collide with each other
or with anything else on the machine.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
ENVOY_BIN = os.environ.get("ENVOY_BIN", str(REPO / ".tools/envoy-1.37.0/envoy"))
MODULE_DIR = os.environ.get("MODULE_DIR", str(REPO / ".work/module"))
UPSTREAM_BIN = os.environ.get("UPSTREAM_BIN", str(REPO / "target/release/httpbun-upstream"))
ENVOY_VERSION = os.environ.get("ENVOY_VERSION", "1.37.0")

DYNAMIC_MODULE_FILTER = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
DYNAMIC_MODULE_PER_ROUTE = (
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute"
)
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def envoy_minor() -> int:
    return int(ENVOY_VERSION.split(".")[1])


def kgateway_release() -> str:
    """The kgateway release whose semantics the module follows in this Envoy (no override): the
    release that ships it, v2.3 on 1.36 and 1.37, v2.4 from 1.38."""
    return "v2.3" if envoy_minor() <= 37 else "v2.4"


def read_repeated(values: list[str], release: str | None = None) -> str:
    """A repeated header as a template function reads it: the last value (v2.3), or all of them
    joined with ", " (v2.4)."""
    return values[-1] if (release or kgateway_release()) == "v2.3" else ", ".join(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of a header (names compared case-insensitively)."""
        values = self.header_values(name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | str | None = None,
    timeout: float = 10.0,
) -> Response:
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        items = list(headers.items() if isinstance(headers, dict) else (headers or []))
        # A caller that names the Host header gets exactly that one.
        skip_host = any(k.lower() == "host" for k, _ in items)
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        for k, v in items:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


class Upstream:
    """The httpbun-compatible upstream on a free loopback port."""

    def __init__(self, extra_env: dict[str, str] | None = None):
        env = dict(os.environ, **(extra_env or {}))
        self.proc = subprocess.Popen(
            [UPSTREAM_BIN, "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"upstream did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Envoy:
    proc: subprocess.Popen
    port: int
    admin_port: int
    log_path: pathlib.Path
    config_path: pathlib.Path
    extra: dict = field(default_factory=dict)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, **kw) -> Response:
        return request(self.port, method, path, **kw)

    def stats(self) -> dict[str, int]:
        resp = request(self.admin_port, "GET", "/stats?format=json")
        out = {}
        for s in resp.json()["stats"]:
            if "value" in s:
                out[s["name"]] = s["value"]
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lab_config(upstream_port: int) -> dict:
    """The repository's envoy.yaml, as a person reads it, with only its ports changed."""
    config = yaml.safe_load((REPO / "envoy.yaml").read_text())
    set_upstream_port(config, upstream_port)
    return config


def set_upstream_port(config: dict, upstream_port: int):
    for cluster in config["static_resources"]["clusters"]:
        for endpoints in cluster["load_assignment"]["endpoints"]:
            for lb in endpoints["lb_endpoints"]:
                lb["endpoint"]["address"]["socket_address"]["port_value"] = upstream_port


def module_filter(filter_name: str, config: str | None, http_filter_name: str | None = None, disabled=False) -> dict:
    """An HTTP filter entry that loads our module, the way Envoy configs (and kgateway) write it."""
    typed = {
        "@type": DYNAMIC_MODULE_FILTER,
        "dynamic_module_config": {"name": "rust_module"},
        "filter_name": filter_name,
    }
    if config is not None:
        typed["filter_config"] = {"@type": STRING_VALUE, "value": config}
    entry = {"name": http_filter_name or filter_name, "typed_config": typed}
    if disabled:
        entry["disabled"] = True
    return entry


def per_route(config_name: str, config: str) -> dict:
    """A DynamicModuleFilterPerRoute as kgateway emits it: the JSON in a StringValue. From Envoy
    1.38 (kgateway v2.4) the control plane sets `filter_name` beside the deprecated
    `per_route_config_name` (1.36 and 1.37 do not know the field)."""
    out = {
        "@type": DYNAMIC_MODULE_PER_ROUTE,
        "dynamic_module_config": {"name": "rust_module"},
        "per_route_config_name": config_name,
        "filter_config": {"@type": STRING_VALUE, "value": config},
    }
    if envoy_minor() >= 38:
        out["filter_name"] = config_name
    return out


def gateway_config(upstream_port: int, http_filters: list[dict], routes: list[dict], hcm_extra: dict | None = None,
                   clusters: list[dict] | None = None) -> dict:
    """A one-listener Envoy config with the given filters (the router is appended) and routes."""
    hcm = {
        "@type": HCM,
        "stat_prefix": "e2e",
        "route_config": {"name": "e2e", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters + [ROUTER],
    }
    hcm.update(hcm_extra or {})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "e2e",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": (clusters or []) + [
                {
                    "name": "httpbun",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "httpbun",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def start_envoy(
    config: dict,
    env: dict[str, str] | None = None,
    expect_failure: bool = False,
    concurrency: int = 1,
    extra_args: list[str] | None = None,
    listener_port: int | None = None,
    module_dir: str | None = None,
) -> Envoy:
    """Start Envoy on free loopback ports and wait until it serves (or, when told so, until it exits).

    The listener and admin ports of `config` are replaced with free ones. A config whose listener
    comes from LDS names its port in `listener_port` instead. Envoy's whole log (stdout and
    stderr) goes to one file, read with `Envoy.logs()`. `module_dir` is where Envoy looks for
    `librust_module.so` (default: the module under test).

    A free port can be taken by another process between our check and Envoy's bind (the
    differential suite starts two Envoys at once): a start that fails only to bind is tried again
    on other ports, up to three times.
    """
    for attempt in range(3):
        envoy = _start_envoy_once(config, env, expect_failure, concurrency, extra_args, listener_port, module_dir)
        lost_race = not envoy.alive() and "Address already in use" in envoy.logs()
        if not lost_race or attempt == 2:
            break
    if not expect_failure and not envoy.alive():
        raise RuntimeError(f"envoy exited with {envoy.proc.returncode}:\n{envoy.logs()[-4000:]}")
    return envoy


def _start_envoy_once(
    config: dict,
    env: dict[str, str] | None,
    expect_failure: bool,
    concurrency: int,
    extra_args: list[str] | None,
    listener_port: int | None,
    module_dir: str | None,
) -> Envoy:
    """One try of `start_envoy`: an Envoy that serves, or one that exited (the caller decides)."""
    config = copy.deepcopy(config)
    admin_port = free_port()
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    if listener_port is None:
        port = free_port()
        config["static_resources"]["listeners"][0]["address"] = {
            "socket_address": {"address": "127.0.0.1", "port_value": port}
        }
    else:
        port = listener_port

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="envoy-e2e-"))
    config_path = workdir / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = workdir / "envoy.log"
    proc_env = dict(os.environ, **(env or {}))
    proc_env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = module_dir or MODULE_DIR
    args = [
        ENVOY_BIN, "-c", str(config_path), "--concurrency", str(concurrency),
        "--disable-hot-restart", "--log-level", "info",
    ] + (extra_args or [])
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=proc_env)
    envoy = Envoy(proc, port, admin_port, log_path, config_path)

    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            return envoy
        if not expect_failure:
            try:
                if request(admin_port, "GET", "/ready", timeout=1).status == 200:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return envoy
            except OSError:
                pass
        time.sleep(0.1)
    envoy.stop()
    if expect_failure:
        raise AssertionError(f"envoy did not exit within 30s:\n{envoy.logs()[-4000:]}")
    raise RuntimeError(f"envoy did not become ready:\n{envoy.logs()[-4000:]}")
