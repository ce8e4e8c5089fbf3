"""`rustformations render` against the real Envoy with the module: for every case, the request the
upstream receives and the response the client gets must be the same. The CLI runs the module's own
filter, driven by the fake Envoy (`envoy_module::testing`), so this guards the fake Envoy's
fidelity: the order and end-of-stream flags of the hooks, buffering, local replies.

The cases are the kgateway transformation policies of test_kgateway_transformation.py (as
kgateway's control plane sends them, per route, `rustformation`) plus the lab's
k8s/trafficpolicy.yaml read by the CLI as a TrafficPolicy file. A recording upstream stores each
request exactly as received and answers the case's response; the CLI is given the same request
and that response. Compared after removing what Envoy itself adds around the filter
(`x-request-id`, `x-forwarded-proto`, `x-envoy-*`, `date`, `server`): method, path, host, header
lines (as a multiset: Envoy's header order is its own), body, status, and for local replies
the response code details.

Not in the corpus, on purpose: `replace_with_random` (a fresh value per call), WebSocket/CONNECT
(streams, not messages) and the buffer filter's 413 (made by another Envoy filter).
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import subprocess
import threading

import pytest
import yaml

from envoy_harness import (
    REPO,
    envoy_minor,
    gateway_config,
    kgateway_release,
    request,
    start_envoy,
)
from test_kgateway_transformation import (
    ALIAS,
    BAD_JSON_REQUEST,
    BAD_JSON_RESPONSE,
    BODY_READ,
    CHAT,
    CHAT_JSON_REQUEST,
    CHAT_JSON_RESPONSE,
    CREATE_BODY,
    EMPTY_BODY,
    ENVOY_ENV,
    FUNCTIONS,
    HEADERS,
    JSON_ARRAY,
    METADATA,
    NONE_BODY,
    OPERATORS,
    ORDER,
    STATUS,
    UNDECLARED_EMPTY_JSON,
    UNDECLARED_REQUEST,
    UNDECLARED_RESPONSE,
    listener_filter,
    route,
)
from test_kgateway_releases import RELEASES_POLICY

CLI = os.environ.get("RUSTFORMATIONS_CLI", str(REPO / "target/release/rustformations"))
START_TIME = "2026-11-26T13:46:26.123Z"
LAB_POLICY = REPO / "k8s/trafficpolicy.yaml"

JSON_HEADERS = [("Content-Type", "application/json")]
UPSTREAM_JSON = (200, [("Content-Type", "application/json"), ("X-Powered-By", "recorder")],
                 json.dumps({"model": "gpt-4", "choices": [{"message": {"role": "assistant"}}]}).encode())
TEAPOT = (418, [("Content-Type", "text/plain")], b"I'm a teapot")

# (id, policy JSON (None: the lab's TrafficPolicy file), method, headers, body, upstream response)
CASES = [
    ("headers", HEADERS, "GET", [("X-Client", "c"), ("X-Add", "zero"), ("X-Remove-Me", "1"), ("x-remove-too", "2"),
                                 ("X-Twice", "early"), ("X-Twice", "late"), ("X-Emptied", "was here"),
                                 ("X-Render-Error", "orig"), ("X-Nothing", "orig")], None, UPSTREAM_JSON),
    ("order", ORDER, "POST", JSON_HEADERS, b"old body", UPSTREAM_JSON),
    ("status", STATUS, "GET", [], None, UPSTREAM_JSON),
    ("json-request", CHAT_JSON_REQUEST, "POST", JSON_HEADERS,
     json.dumps({"header": "shadowed", **json.loads(CHAT)}).encode(), UPSTREAM_JSON),
    ("json-response", CHAT_JSON_RESPONSE, "POST", JSON_HEADERS, CHAT.encode(), UPSTREAM_JSON),
    ("json-array", JSON_ARRAY, "POST", JSON_HEADERS,
     json.dumps([{"name": "a"}, {"name": "b"}, {"name": "c"}]).encode(), UPSTREAM_JSON),
    ("none", NONE_BODY, "POST", [("Content-Type", "application/octet-stream")], b"0123456789abcdef" * 64,
     UPSTREAM_JSON),
    ("empty-body", EMPTY_BODY, "POST", JSON_HEADERS, b'{"a":1}', UPSTREAM_JSON),
    ("create-body", CREATE_BODY, "GET", [], None, UPSTREAM_JSON),
    ("body-read", BODY_READ, "POST", [], b"abc", UPSTREAM_JSON),
    ("undeclared-request", UNDECLARED_REQUEST, "POST", [("Accept", "text/plain")], None, UPSTREAM_JSON),
    ("undeclared-request-body", UNDECLARED_REQUEST, "POST", [], b'{"model":"x"}', UPSTREAM_JSON),
    ("undeclared-response", UNDECLARED_RESPONSE, "POST", [], None, UPSTREAM_JSON),
    ("undeclared-empty-json", UNDECLARED_EMPTY_JSON, "POST", [], None, UPSTREAM_JSON),
    ("bad-json-request", BAD_JSON_REQUEST, "POST", [], b"{not json", UPSTREAM_JSON),
    ("bad-json-response", BAD_JSON_RESPONSE, "POST", [], None, TEAPOT),
    ("metadata", METADATA, "GET", [("X-In", "hello")], None, UPSTREAM_JSON),
    ("operators", OPERATORS, "POST", JSON_HEADERS + [("X-Who", "client")], CHAT.encode(), UPSTREAM_JSON),
    ("functions", FUNCTIONS, "GET", [("X-Quote", 'a "q" \\ b')], None, UPSTREAM_JSON),
    ("alias", ALIAS, "DELETE", [], None, UPSTREAM_JSON),
    ("releases", RELEASES_POLICY, "POST", JSON_HEADERS + [("Cookie", "session=abc123; User=johndoe"),
                                                          ("cookie", "foo=bar"), ("x-dup", "one"), ("X-Dup", "two")],
     b'{"text":"a-b_c.d","nested":{"s":"hello"},"model":"gpt-4o"}', UPSTREAM_JSON),
    ("lab", None, "POST", JSON_HEADERS,
     json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}).encode(), UPSTREAM_JSON),
]

# Added by Envoy around the filter, not by it.
ENVOY_REQUEST_HEADERS = {"x-request-id", "x-forwarded-proto"}
# `connection: close`: Envoy's HTTP/1 codec closes after a local reply to a request it did not read.
ENVOY_RESPONSE_HEADERS = {"date", "server", "x-details", "connection"}


class Recorder:
    """An upstream that records each request as received and answers the case's response."""

    def __init__(self):
        self.requests: dict[str, dict] = {}
        self.responses: dict[str, tuple] = {}
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return body
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def _handle(self):
                body = self._read_body()
                case = self.path.split("/")[2]
                recorder.requests[case] = {"method": self.command, "path": self.path,
                                           "headers": list(self.headers.items()), "body": body}
                status, headers, out = recorder.responses[case]
                self.send_response_only(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def lab_policy_json() -> str:
    policy = yaml.safe_load(LAB_POLICY.read_text())
    return json.dumps(policy["spec"]["transformation"])


@pytest.fixture(scope="module")
def recorder():
    r = Recorder()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def envoy(recorder):
    routes = [route(f"/c/{case_id}/", policy if policy is not None else lab_policy_json(), rewrite=None,
                    cluster="httpbun") for case_id, policy, *_ in CASES]
    config = gateway_config(recorder.port, [listener_filter()], routes)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["response_headers_to_add"] = [
        {"header": {"key": "x-details", "value": "%RESPONSE_CODE_DETAILS%"}}]
    e = start_envoy(config, env=ENVOY_ENV)
    yield e
    e.stop()


def split_values(values):
    """Envoy 1.36 has no native add: the module joins added values onto one line with ','."""
    if envoy_minor() != 36:
        return values
    return [(n, p.strip()) for n, v in values for p in v.split(",")]


def normalize(headers, drop) -> list[tuple[str, str]]:
    out = [(n.lower(), v) for n, v in headers if n.lower() not in drop and not n.lower().startswith("x-envoy-")]
    return sorted(split_values(out))


def run_cli(tmp_path, case_id, policy, method, headers, body, response, port) -> dict:
    if policy is None:
        policy_file = LAB_POLICY
    else:
        policy_file = tmp_path / f"{case_id}.json"
        policy_file.write_text(policy)
    status, resp_headers, resp_body = response
    resp_file = tmp_path / f"{case_id}.response"
    resp_file.write_bytes(f"HTTP/1.1 {status} X\r\n".encode()
                          + b"".join(f"{k}: {v}\r\n".encode() for k, v in resp_headers)
                          + f"Content-Length: {len(resp_body)}\r\n\r\n".encode() + resp_body)
    args = [CLI, "render", str(policy_file), "--format", "json", "--response", str(resp_file),
            "--start-time", START_TIME, "-X", method, "-H", f"Host: 127.0.0.1:{port}",
            # The release the module follows in this Envoy, which the CLI cannot see.
            "--kgateway", kgateway_release()]
    for k, v in headers:
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        body_file = tmp_path / f"{case_id}.body"
        body_file.write_bytes(body)
        args += ["-d", f"@{body_file}"]
    args += ["--env", f"RF_E2E_ENV={ENVOY_ENV['RF_E2E_ENV']}", f"/c/{case_id}/x"]
    proc = subprocess.run(args, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_cli_binary_is_built():
    assert pathlib.Path(CLI).is_file(), f"{CLI} missing: run `make build`"


@pytest.mark.parametrize("case_id,policy,method,headers,body,response", CASES, ids=[c[0] for c in CASES])
def test_cli_matches_envoy(envoy, recorder, tmp_path, case_id, policy, method, headers, body, response):
    recorder.responses[case_id] = response
    recorder.requests.pop(case_id, None)
    got = envoy.request(method, f"/c/{case_id}/x", headers=headers, body=body)
    cli = run_cli(tmp_path, case_id, policy, method, headers, body, response, envoy.port)

    # What the upstream received.
    sent = recorder.requests.get(case_id)
    want = cli["upstream_request"]
    if want is None:
        assert sent is None, f"the CLI says the filter answered, but the upstream got {sent}"
    else:
        assert sent is not None, "the CLI says the request is forwarded, but the upstream got nothing"
        assert (sent["method"], sent["path"]) == (want["method"], want["path"])
        expected = ([(h["name"], h["value"]) for h in want["headers"] if not h["name"].startswith(":")]
                    + [("host", want["authority"])])
        if (want["method"] in ("POST", "PUT", "PATCH") and not want.get("body")
                and not any(n == "content-length" for n, _ in expected)):
            # Envoy's HTTP/1 codec sends a bodiless POST/PUT/PATCH with `content-length: 0`.
            expected.append(("content-length", "0"))
        assert normalize(sent["headers"], ENVOY_REQUEST_HEADERS) == normalize(expected, ENVOY_REQUEST_HEADERS)
        assert sent["body"] == want.get("body", "").encode()

    # What the client got.
    client = cli["client_response"]
    assert got.status == client["status"]
    assert normalize(got.headers, ENVOY_RESPONSE_HEADERS) == normalize(
        [(h["name"], h["value"]) for h in client["headers"] if not h["name"].startswith(":")], ENVOY_RESPONSE_HEADERS)
    assert got.body == client.get("body", "").encode()
    if client["local_reply"]:
        details = client["details"].replace(" ", "_")
        assert got.header("x-details") == ("dynamic_module" if envoy_minor() == 36 else details)


def test_the_lab_request_renders_the_smart_header(envoy, recorder, tmp_path):
    """The issue's acceptance line, by both: the real Envoy and the CLI."""
    case = next(c for c in CASES if c[0] == "lab")
    cli = run_cli(tmp_path, *case, envoy.port)
    headers = {h["name"]: h["value"] for h in cli["client_response"]["headers"]}
    assert headers["x-smart-header"] == "method=POST&path=/c/lab/x"
    recorder.responses["lab"] = case[5]
    got = envoy.request(case[2], "/c/lab/x", headers=case[3], body=case[4])
    assert got.header("x-smart-header") == "method=POST&path=/c/lab/x"
