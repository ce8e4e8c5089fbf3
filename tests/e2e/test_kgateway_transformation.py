"""kgateway v2.3's `rustformation` filter, end to end in the real Envoy, configured exactly as
kgateway's control plane emits it (shared/docs/kgateway-contract.md):

- one listener-level HTTP filter `dynamic_modules/simple_mutations`, `disabled: true`, filter_name
  `rustformation`, filter_config StringValue("{}");
- per route, `typed_per_filter_config["dynamic_modules/simple_mutations"]` = a
  DynamicModuleFilterPerRoute with `per_route_config_name: rustformation` and the TrafficPolicy's
  `spec.transformation` JSON in a StringValue.

The JSON policies below are written as kgateway writes them (JSON text), not built from our structs.
Each scenario has its own route on one shared Envoy; what the upstream received is read from
httpbun's /anything echo. Response code details and request-side dynamic metadata are made
observable through `response_headers_to_add` at the route-configuration level (Envoy applies it to
local replies too); response-side metadata, set after the router formats those headers, through a
file access log.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest

from envoy_harness import (
    ENVOY_VERSION,
    envoy_minor,
    gateway_config,
    read_repeated,
    module_filter,
    per_route,
    start_envoy,
)

FILTER = "dynamic_modules/simple_mutations"
BUFFER_FILTER = "envoy.filters.http.buffer"
BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
MARKER = "x-custom-transformed"
ENVOY_ENV = {"RF_E2E_ENV": "from-the-envoy-process"}

# Envoy stores response code details with whitespace replaced by underscores. Envoy 1.36's
# dynamic-module ABI has no details argument: its local replies carry Envoy's generic
# `dynamic_module` (ABI-NOTES.md).
UNDECLARED_DETAILS = "undeclared_json_variables_in_transformation_template"
JSON_DETAILS = "json_parsing_error_in_transformation_template"


def expected_details(ours: str) -> str:
    return "dynamic_module" if envoy_minor() == 36 else ours


def listener_filter(filter_name: str = "rustformation") -> dict:
    """The listener-level filter exactly as kgateway v2.3 emits it."""
    return module_filter(filter_name, "{}", http_filter_name=FILTER, disabled=True)


def route(prefix: str, policy: str | None, *, rewrite: str | None = "/anything", cluster: str = "httpbun",
          config_name: str = "rustformation", extra_filters: dict | None = None, match: dict | None = None) -> dict:
    entry = {"match": match or {"prefix": prefix}, "route": {"cluster": cluster}}
    if rewrite is not None:
        entry["route"]["prefix_rewrite"] = rewrite
    per_filter = dict(extra_filters or {})
    if policy is not None:
        per_filter[FILTER] = per_route(config_name, policy)
    if per_filter:
        entry["typed_per_filter_config"] = per_filter
    return entry


def values(resp, name: str) -> list[str]:
    """Every value of a header, with comma-joined lines split: Envoy 1.36 has no native add, so the
    SDK emulates `add` by joining onto one line (ABI-NOTES.md); 1.37+ sends separate lines."""
    out = []
    for v in resp.header_values(name):
        out.extend(p.strip() for p in v.split(","))
    return out


def echoed(echo_headers: dict, name: str) -> list[str]:
    """A header as httpbun's echo shows it (a string, or an array when repeated), split as above."""
    value = echo_headers.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [p.strip() for item in items for p in item.split(",")]


# --- The policies, as kgateway writes them -------------------------------------------------------

HEADERS = r'''{"request":{"set":[{"name":"x-set","value":"set-value"},{"name":"x-dup","value":"first"},
{"name":"x-dup","value":"second"},{"name":"x-from-client","value":"[{{ header(\"X-Client\") }}]"},
{"name":"x-last","value":"{{ header(\"x-twice\") }}"},{"name":"x-emptied"},
{"name":"x-render-error","value":"{{ \"a\" + 1 }}"},{"name":"x-nothing","value":"{{ header(\"x-missing\") }}"}],
"add":[{"name":"x-add","value":"one"},{"name":"x-add","value":"two"},{"name":"x-add-empty","value":"{{ header(\"x-missing\") }}"},
{"name":"x-add-none"}],
"remove":["x-remove-me","X-Remove-Too"]},
"response":{"set":[{"name":"x-resp-set","value":"resp {{ header(\"content-type\") }}"}],
"add":[{"name":"x-resp-add","value":"a1"},{"name":"x-resp-add","value":"a2"}],
"remove":["x-powered-by"]},
"unknownTopLevel":{"ignored":true}}'''

ORDER = r'''{"request":{"body":{"parseAs":"AsString","value":"new body"},
"set":[{"name":"x-order","value":"set"},{"name":"content-type","value":"text/x-set"}],
"add":[{"name":"x-order","value":"add"}],
"remove":["x-order"]}}'''

STATUS = r'''{"response":{"set":[{"name":":status","value":"{{ 200 + 1 }}"},{"name":"x-was","value":"{{ header(\":status\") }}"}]}}'''

CHAT_JSON_REQUEST = r'''{"request":{"body":{"parseAs":"AsJson",
"value":"{\"model\":\"{{ model }}\",\"count\":{{ messages|length }},\"first\":\"{{ raw_string(messages[0].content) }}\",\"ctx\":{{ context().messages[1].role | tojson }}}"},
"set":[{"name":"x-model","value":"{{ model }}"},{"name":"x-role","value":"{{ messages[0].role }}"},
{"name":"x-shadow","value":"{{ header }}"}]}}'''

CHAT_JSON_RESPONSE = r'''{"response":{"body":{"parseAs":"AsJson","value":"{{ choices[0].message.role }}|{{ model }}"},
"set":[{"name":"content-type","value":"text/plain"}]}}'''

# A header name computed in the template: the filter reads every request header at once (one call
# into Envoy; up to 32 headers without allocating, more on the heap).
COMPUTED_NAME = r'''{"response":{"set":[{"name":"x-picked","value":"{% set n = 'x-h' ~ request_header('x-pick') %}{{ request_header(n) }}"}]}}'''

JSON_ARRAY = r'''{"request":{"body":{"parseAs":"AsJson","value":"{{ context()|length }}:{{ context()[1].name }}"}}}'''

NONE_BODY = r'''{"request":{"body":{"parseAs":"None","value":"{{ this would not even compile"},
"set":[{"name":"x-body-seen","value":"[{{ body() }}|{{ context() }}]"}]},
"response":{"body":{"parseAs":"None","value":"replaced"},"set":[{"name":"x-resp-none","value":"yes"}]}}'''

EMPTY_BODY = r'''{"request":{"body":{"value":"{% if false %}x{% endif %}"}},
"response":{"body":{"value":"{% if false %}x{% endif %}"}}}'''

CREATE_BODY = r'''{"request":{"body":{"parseAs":"AsString","value":"created for {{ request_header(\":method\") }}"}}}'''

BODY_READ = r'''{"request":{"set":[{"name":"x-upper","value":"{{ body() | upper }}"}]},
"response":{"set":[{"name":"x-len","value":"{{ body() | length }}"}]}}'''

UNDECLARED_REQUEST = r'''{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}'''
UNDECLARED_RESPONSE = r'''{"response":{"set":[{"name":"x","value":"{{ model }}"}]}}'''
UNDECLARED_EMPTY_JSON = r'''{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ model }}"}]}}'''
BAD_JSON_REQUEST = r'''{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ model }}"}]}}'''
BAD_JSON_RESPONSE = r'''{"response":{"body":{"parseAs":"AsJson","value":"{{ code }}"}}}'''

LIMIT = r'''{"response":{"body":{"value":"rewritten {{ header(\":status\") }}: {% if body() %}had a body{% endif %}"},
"set":[{"name":"x-limit","value":"seen {{ header(\":status\") }}"}]}}'''

METADATA = r'''{"request":{"dynamicMetadata":[
{"namespace":"rf.e2e","key":"k","value":{"stringValue":"v-{{ header(\"x-in\") }}"}},
{"namespace":"rf.e2e","key":"empty","value":{"stringValue":"{{ header(\"x-missing\") }}"}}]},
"response":{"dynamicMetadata":[{"namespace":"rf.e2e","key":"resp","value":{"stringValue":"status {{ header(\":status\") }}"}}]}}'''

OPERATORS = r'''{"request":{"set":[{"name":"x-who","value":"changed by the request transformation"}]},
"response":{"set":[{"name":"x-smart","value":"method=%REQ(:METHOD)%&path=%REQ(:PATH)%"},
{"name":"x-client-path","value":"{{ request_header(\":path\") }}"},
{"name":"x-client-who","value":"{{ request_header(\"X-WHO\") }}"},
{"name":"x-resp-op","value":"%RESP(content-type)%"},
{"name":"x-protocol","value":"%PROTOCOL%"}]}}'''

RANDOM = r'''{"response":{"set":[{"name":"x-random","value":"{{ replace_with_random(\"id-PATTERN\", \"PATTERN\") }}"},
{"name":"x-random-2","value":"{{ replace_with_random(\"id-PATTERN\", \"PATTERN\") }}"}]}}'''

FUNCTIONS = r'''{"response":{"set":[
{"name":"x-env","value":"{{ env(\"RF_E2E_ENV\") }}"},
{"name":"x-env-unset","value":"[{{ env(\"RF_E2E_UNSET\") }}]"},
{"name":"x-substring","value":"{{ substring(\"hello world\", 6) }}|{{ substring(\"hello\", 1, 3) }}|[{{ substring(\"hi\", 10) }}]|{{ substring(\"hello\", 3, 99) }}"},
{"name":"x-b64","value":"{{ base64_encode(\"a?b>\") }}|{{ base64url_encode(\"a?b>\") }}|{{ base64_decode(\"aGk=\") }}|{{ base64url_decode(\"YT9iPg==\") }}|[{{ base64_decode(\"!!\") }}]"},
{"name":"x-replace","value":"{{ replace_with_string(\"a-b-c\", \"-\", \"+\") }}"},
{"name":"x-raw","value":"{{ raw_string(request_header(\"x-quote\")) }}"},
{"name":"x-req-fn","value":"{% if request_header(\"x-quote\") == header(\"x-quote\") %}same{% else %}different{% endif %}"}]}}'''

UPGRADE = r'''{"request":{"body":{"parseAs":"AsString","value":"BUFFERED {{ body() }}"},
"set":[{"name":"x-upgrade-seen","value":"{{ header(\"upgrade\") }}"},{"name":"x-body-in-upgrade","value":"[{{ body() }}]"}]},
"response":{"body":{"value":"BUFFERED"},"set":[{"name":"x-upgrade-resp","value":"yes"}]}}'''

ALIAS = r'''{"response":{"set":[{"name":"x-alias","value":"{{ request_header(\":method\") }}"}]}}'''

VHOST = r'''{"response":{"set":[{"name":"x-level","value":"virtual-host"},{"name":"x-vhost-only","value":"v"}]}}'''
VHOST_ROUTE = r'''{"response":{"set":[{"name":"x-level","value":"route"}]}}'''


class EchoUpstream:
    """A raw TCP upstream for upgrades: answers a WebSocket upgrade with 101 (a CONNECT with 200),
    records the request head, then echoes bytes. httpbun has no WebSocket endpoint."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.heads: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            self.heads.append(head.decode())
            if head.upper().startswith(b"CONNECT"):
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            if rest:
                conn.sendall(rest)
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                conn.sendall(chunk)

    def stop(self):
        self.sock.close()


def upstream_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


def kgateway_config(upstream_port: int, echo_port: int, access_log: str | None = None) -> dict:
    buffer_1k = {BUFFER_FILTER: {"@type": BUFFER_PER_ROUTE, "buffer": {"max_request_bytes": 1024}}}
    routes = [
        route("/t/headers", HEADERS),
        route("/t/order", ORDER),
        route("/t/status", STATUS),
        route("/t/json-array", JSON_ARRAY),
        route("/t/computed-name", COMPUTED_NAME),
        route("/t/json-request", CHAT_JSON_REQUEST),
        route("/t/json-response", CHAT_JSON_RESPONSE, rewrite="/llm/chat/completions"),
        route("/t/none", NONE_BODY),
        route("/t/empty-body", EMPTY_BODY),
        route("/t/create-body", CREATE_BODY),
        route("/t/body-read", BODY_READ),
        route("/t/undeclared-request", UNDECLARED_REQUEST),
        route("/t/undeclared-response", UNDECLARED_RESPONSE),
        route("/t/undeclared-empty-json", UNDECLARED_EMPTY_JSON),
        route("/t/bad-json-request", BAD_JSON_REQUEST),
        route("/t/bad-json-response", BAD_JSON_RESPONSE, rewrite="/status/418"),
        route("/t/limit", LIMIT, extra_filters=buffer_1k),
        route("/t/metadata", METADATA),
        route("/v1/chat/completions", OPERATORS, rewrite="/llm/chat/completions"),
        route("/t/random", RANDOM),
        route("/t/functions", FUNCTIONS),
        route("/t/alias", ALIAS, config_name="http_simple_mutations"),
        {
            "match": {"prefix": "/ws"},
            "route": {"cluster": "echo", "upgrade_configs": [{"upgrade_type": "websocket"}]},
            "typed_per_filter_config": {FILTER: per_route("rustformation", UPGRADE)},
        },
        {
            "match": {"connect_matcher": {}},
            "route": {"cluster": "echo", "upgrade_configs": [{"upgrade_type": "CONNECT"}]},
            "typed_per_filter_config": {FILTER: per_route("rustformation", UPGRADE)},
        },
        # No per-route config: the disabled listener filter does not run at all.
        route("/plain", None),
    ]
    buffer_filter = {"name": BUFFER_FILTER, "disabled": True,
                     "typed_config": {"@type": BUFFER, "max_request_bytes": 1024}}
    config = gateway_config(
        upstream_port,
        [buffer_filter, listener_filter()],
        routes,
        hcm_extra={"upgrade_configs": [{"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}]},
        clusters=[upstream_cluster("echo", echo_port)],
    )
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route_config = hcm["route_config"]
    if access_log:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log,
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
        }}]
    route_config["response_headers_to_add"] = [
        {"header": {"key": "x-details", "value": "%RESPONSE_CODE_DETAILS%"}},
        {"header": {"key": "x-md-k", "value": "%DYNAMIC_METADATA(rf.e2e:k)%"}},
        {"header": {"key": "x-md-empty", "value": "%DYNAMIC_METADATA(rf.e2e:empty)%"}},
        {"header": {"key": "x-md-resp", "value": "%DYNAMIC_METADATA(rf.e2e:resp)%"}},
    ]
    return config


ACCESS_LOG_FORMAT = ("[%REQ(X-TEST-ID)%] %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% k=%DYNAMIC_METADATA(rf.e2e:k)% "
                     "empty=%DYNAMIC_METADATA(rf.e2e:empty)% resp=%DYNAMIC_METADATA(rf.e2e:resp)%\n")


def access_log_line(envoy, test_id: str) -> str:
    """The access-log line of the request sent with `X-Test-Id: <test_id>` (written at stream end)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        path = envoy.extra["access_log"]
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(f"[{test_id}] "):
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {test_id}")


@pytest.fixture(scope="module")
def echo_upstream():
    server = EchoUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(upstream, echo_upstream, tmp_path_factory):
    access_log = tmp_path_factory.mktemp("access") / "access.log"
    envoy = start_envoy(kgateway_config(upstream.port, echo_upstream.port, str(access_log)), env=ENVOY_ENV,
                        extra_args=["--file-flush-interval-msec", "20"])
    envoy.extra["access_log"] = access_log
    yield envoy
    envoy.stop()


def test_config_shape_is_kgateways(upstream, echo_upstream):
    """Guard against the fixture drifting from what kgateway emits."""
    config = kgateway_config(upstream.port, echo_upstream.port)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ours = [f for f in hcm["http_filters"] if f["name"] == FILTER]
    assert ours == [{
        "name": "dynamic_modules/simple_mutations",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "rust_module"},
            "filter_name": "rustformation",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"},
        },
        "disabled": True,
    }]
    r = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    expected = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "rust_module"},
        "per_route_config_name": "rustformation",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": HEADERS},
    }
    if envoy_minor() >= 38:
        expected["filter_name"] = "rustformation"  # kgateway v2.4 sets both names
    assert r["typed_per_filter_config"][FILTER] == expected


# --- Headers -------------------------------------------------------------------------------------

def test_request_and_response_set_add_remove(gw):
    resp = gw.request("GET", "/t/headers", headers=[
        ("X-Client", "c"), ("X-Add", "zero"), ("X-Remove-Me", "1"), ("x-remove-too", "2"),
        ("X-Twice", "early"), ("X-Twice", "late"), ("X-Emptied", "was here"), ("X-Render-Error", "orig"),
        ("X-Nothing", "orig"),
    ])
    assert resp.status == 200
    sent = resp.json()["headers"]
    assert sent["X-Set"] == "set-value"
    assert sent["X-Dup"] == "second"  # the same header twice in `set`: the later one wins
    assert sent["X-From-Client"] == "[c]"  # header() is case-insensitive
    # Duplicate request headers: the last value (kgateway v2.3), or both joined (v2.4).
    assert sent["X-Last"] == read_repeated(["early", "late"])
    assert echoed(sent, "X-Add") == ["zero", "one", "two"]  # add appends, in order
    # Empty configured value, empty render and render error all remove the header under `set`;
    # under `add`, empty values are skipped.
    for gone in ("X-Emptied", "X-Render-Error", "X-Nothing", "X-Add-Empty", "X-Add-None",
                 "X-Remove-Me", "X-Remove-Too"):
        assert gone not in sent, gone
    assert resp.header("x-resp-set") == "resp application/json"
    assert values(resp, "x-resp-add") == ["a1", "a2"]
    assert resp.header("x-powered-by") is None  # response remove
    assert resp.header(MARKER) == "true"


@pytest.mark.parametrize("count", [3, 31, 32, 33, 90])
def test_a_computed_header_name_reads_the_whole_request_map(gw, count):
    """Fewer and more request headers than the SDK reads on the stack: the last one, a repeated
    one (read as the release reads it) and a missing one all answer as from a lookup by name."""
    headers = [(f"x-h{i}", f"v{i}") for i in range(count)] + [("x-h0", "v0-again")]
    for pick, want in [(str(count - 1), f"v{count - 1}"), ("0", read_repeated(["v0", "v0-again"])),
                       ("missing", None)]:
        resp = gw.request("GET", "/t/computed-name", headers=headers + [("x-pick", pick)])
        assert resp.status == 200
        assert resp.header("x-picked") == want, (count, pick)


def test_order_body_then_set_then_add_then_remove(gw):
    resp = gw.request("POST", "/t/order", headers={"Content-Type": "application/json"}, body="old body")
    sent = resp.json()
    assert sent["data"] == "new body"
    # set (then add) ran after the body: the body step did not undo the content-type set.
    assert sent["headers"]["Content-Type"] == "text/x-set"
    assert sent["headers"]["Content-Length"] == str(len("new body"))
    assert "X-Order" not in sent["headers"]  # remove ran last, after set and add


def test_status_rewrite(gw):
    resp = gw.request("GET", "/t/status")
    assert resp.status == 201
    assert resp.header("x-was") == "200"  # header() reads the side as it was when it began
    assert resp.json()["method"] == "GET"


# --- Bodies --------------------------------------------------------------------------------------

CHAT = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": 'say "hi"'},
                                                   {"role": "assistant", "content": "hi"}]})


def test_as_json_request_body_to_headers_and_new_body(gw):
    body = json.dumps({"header": "shadowed", **json.loads(CHAT)})
    resp = gw.request("POST", "/t/json-request", headers={"Content-Type": "application/json"}, body=body)
    assert resp.status == 200, resp.body
    sent = resp.json()
    new_body = '{"model":"gpt-4","count":2,"first":"say \\"hi\\"","ctx":"assistant"}'
    assert sent["data"] == new_body
    assert sent["json"] == {"model": "gpt-4", "count": 2, "first": 'say "hi"', "ctx": "assistant"}
    assert sent["headers"]["Content-Length"] == str(len(new_body))
    assert sent["headers"]["X-Model"] == "gpt-4"
    assert sent["headers"]["X-Role"] == "user"
    assert sent["headers"]["X-Shadow"] == "shadowed"  # a JSON key shadows the function header()


def test_as_json_response_body_to_new_body(gw):
    resp = gw.request("POST", "/t/json-response", headers={"Content-Type": "application/json"}, body=CHAT)
    assert resp.status == 200, resp.body
    assert resp.body == b"assistant|gpt-4"
    assert resp.header("content-length") == str(len(b"assistant|gpt-4"))
    assert resp.header("content-type") == "text/plain"


def test_as_json_top_level_array_is_context(gw):
    resp = gw.request("POST", "/t/json-array", headers={"Content-Type": "application/json"},
                      body=json.dumps([{"name": "a"}, {"name": "b"}, {"name": "c"}]))
    assert resp.status == 200
    assert resp.json()["data"] == "3:b"


def test_parse_as_none_passes_100k_untouched_and_renders_body_empty(gw):
    big = (b"0123456789abcdef" * 6400)  # 100 KiB
    assert len(big) == 100 * 1024
    resp = gw.request("POST", "/t/none", headers={"Content-Type": "application/octet-stream"}, body=big)
    assert resp.status == 200
    sent = resp.json()
    assert sent["data"] == big.decode()
    assert sent["headers"]["Content-Length"] == str(len(big))
    assert sent["headers"]["X-Body-Seen"] == "[|]"  # body() and context() render empty
    # Response parseAs None: the body template is ignored, headers still applied.
    assert resp.header("x-resp-none") == "yes"
    assert resp.header(MARKER) == "true"


def test_empty_rendered_body_sets_content_length_zero_and_drops_content_type(gw):
    resp = gw.request("POST", "/t/empty-body", headers={"Content-Type": "application/json"}, body='{"a":1}')
    assert resp.status == 200
    assert resp.body == b""
    assert resp.header("content-length") == "0"
    assert resp.header("content-type") is None


def test_empty_rendered_request_body_seen_by_upstream(upstream):
    config = gateway_config(upstream.port, [listener_filter()],
                            [route("/", '{"request":{"body":{"value":"{% if false %}x{% endif %}"}}}')])
    envoy = start_envoy(config)
    try:
        resp = envoy.request("POST", "/", headers={"Content-Type": "application/json"}, body='{"a":1}')
        sent = resp.json()
        assert sent["data"] == ""
        assert sent["headers"].get("Content-Length") == "0"
        assert "Content-Type" not in sent["headers"]
    finally:
        envoy.stop()


def test_add_keeps_cookies_apart_and_joins_the_rest_as_envoy_does(upstream):
    config = gateway_config(upstream.port, [listener_filter()], [route(
        "/", '{"request":{"add":[{"name":"cookie","value":"test=123"},{"name":"x-multi","value":"b"}]}}')])
    envoy = start_envoy(config)
    try:
        sent = envoy.request("GET", "/", headers=[("Cookie", "foo=bar"), ("X-Multi", "a")]).json()["headers"]
        if envoy_minor() == 36:
            # 1.36's ABI has no add: the values are joined onto one line, a cookie as a cookie
            # (a ", " would make `test=123` part of the value of `foo`).
            assert sent["Cookie"] == "foo=bar; test=123"
            assert sent["X-Multi"] == "a,b"
        else:
            assert sent["Cookie"] == ["foo=bar", "test=123"]
            assert sent["X-Multi"] == ["a", "b"]
    finally:
        envoy.stop()


def test_headers_only_request_gets_a_body_from_the_template(gw):
    resp = gw.request("GET", "/t/create-body")
    sent = resp.json()
    assert sent["data"] == "created for GET"
    assert sent["headers"]["Content-Length"] == str(len("created for GET"))


def test_body_function_buffers_the_side(gw):
    resp = gw.request("POST", "/t/body-read", body="abc")
    assert resp.json()["headers"]["X-Upper"] == "ABC"
    assert resp.header("x-len") == str(len(resp.body))


# --- The 400 errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("path,body,details", [
    ("/t/undeclared-request", None, UNDECLARED_DETAILS),
    ("/t/undeclared-request", '{"model":"x"}', UNDECLARED_DETAILS),  # AsString: not parsed
    ("/t/undeclared-response", None, UNDECLARED_DETAILS),
    ("/t/undeclared-empty-json", None, UNDECLARED_DETAILS),  # AsJson, but an empty body is not parsed
    ("/t/bad-json-request", "{not json", JSON_DETAILS),
    ("/t/bad-json-response", None, JSON_DETAILS),  # httpbun's 418 is not JSON
])
def test_400_local_replies(gw, path, body, details):
    resp = gw.request("POST", path, headers={"Accept": "text/plain"}, body=body)
    assert resp.status == 400
    assert resp.body == b""
    assert resp.header("content-length") == "0"
    assert resp.header("x-details") == expected_details(details)
    # Our own reply still shows it came from the custom module.
    assert resp.header("x-custom-transformed") == "true"
    assert gw.alive()


# --- Local replies made by Envoy ---------------------------------------------------------------

def test_413_from_buffer_limit_still_gets_the_response_transformation(gw):
    small = gw.request("POST", "/t/limit", body=b"x" * 100)
    assert small.status == 200
    assert small.body == b"rewritten 200: had a body"
    resp = gw.request("POST", "/t/limit", body=b"x" * 2048)
    assert resp.status == 413
    assert resp.header("x-details") == "request_payload_too_large"
    assert resp.header("x-limit") == "seen 413"
    assert resp.body == b"rewritten 413: had a body"  # Envoy's "Payload Too Large" body, rewritten
    assert resp.header("content-length") == str(len(resp.body))
    assert resp.header(MARKER) == "true"


# --- Dynamic metadata ------------------------------------------------------------------------------

def test_dynamic_metadata(gw):
    resp = gw.request("GET", "/t/metadata", headers={"X-In": "hello", "X-Test-Id": "metadata"})
    assert resp.status == 200
    # Request-side metadata is there when the router formats the route's response headers.
    assert resp.header("x-md-k") == "v-hello"
    # The access log sees both sides; a value that renders empty sets nothing (`-`).
    line = access_log_line(gw, "metadata")
    assert line == "[metadata] 200 via_upstream k=v-hello empty=- resp=status 200", line


# --- Operators, request_header() in the response, randomness, functions -----------------------

def test_command_operators_and_request_header_see_the_request_as_sent(gw):
    resp = gw.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json", "X-Who": "client"},
                      body=json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}))
    assert resp.status == 200, resp.body
    assert resp.json()["object"] == "chat.completion"  # the route rewrote to /llm/chat/completions
    assert resp.header("x-smart") == "method=POST&path=/v1/chat/completions"
    assert resp.header("x-client-path") == "/v1/chat/completions"
    assert resp.header("x-client-who") == "client"  # not our own request `set`
    assert resp.header("x-resp-op") == "application/json"
    assert resp.header("x-protocol") == "HTTP/1.1"


def test_replace_with_random_is_fresh_per_request_and_call(gw):
    first = gw.request("GET", "/t/random")
    second = gw.request("GET", "/t/random")
    values_seen = {first.header("x-random"), second.header("x-random"), first.header("x-random-2")}
    assert len(values_seen) == 3  # kgateway #13634 repeats constants-only calls; we must not
    for v in values_seen:
        assert v.startswith("id-")
        token = v[3:]
        assert "=" not in token
        assert len(base64.b64decode(token + "==")) == 16  # 128 bits, base64 without padding


def test_template_functions(gw):
    resp = gw.request("GET", "/t/functions", headers={"X-Quote": 'a "q" \\ b'})
    assert resp.header("x-env") == "from-the-envoy-process"
    assert resp.header("x-env-unset") == "[]"
    assert resp.header("x-substring") == "world|ell|[]|lo"
    assert resp.header("x-b64") == "YT9iPg==|YT9iPg==|hi|a?b>|[]"
    assert resp.header("x-replace") == "a+b+c"
    assert resp.header("x-raw") == 'a \\"q\\" \\\\ b'
    assert resp.header("x-req-fn") == "different"  # response phase: header() reads the response


# --- Upgrades: header operations only, never buffered --------------------------------------------

def raw_exchange(port: int, head: bytes, payload: bytes, timeout=5.0) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        response_head, rest = data.split(b"\r\n\r\n", 1)
        s.sendall(payload)
        while len(rest) < len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        return response_head, rest


def test_websocket_upgrade_is_not_buffered(gw, echo_upstream):
    head = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    # Were the stream buffered, the frames would wait for an end of stream that never comes.
    response_head, echoed_bytes = raw_exchange(gw.port, head, b"frame-bytes-1234")
    assert response_head.startswith(b"HTTP/1.1 101"), response_head
    assert b"x-upgrade-resp: yes" in response_head.lower()
    assert echoed_bytes == b"frame-bytes-1234"  # untouched, not "BUFFERED ..."
    upstream_head = echo_upstream.heads[-1].lower()
    assert "x-upgrade-seen: websocket" in upstream_head  # header operations still ran
    assert "x-body-in-upgrade: []" in upstream_head  # body() renders empty


def test_connect_is_not_buffered(gw, echo_upstream):
    head = b"CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n"
    response_head, echoed_bytes = raw_exchange(gw.port, head, b"tunnelled-bytes")
    assert response_head.startswith(b"HTTP/1.1 200"), response_head
    assert echoed_bytes == b"tunnelled-bytes"
    assert "x-body-in-upgrade: []" in echo_upstream.heads[-1].lower()


# --- Names, levels, marker -------------------------------------------------------------------------

def test_http_simple_mutations_alias_per_route(gw):
    resp = gw.request("DELETE", "/t/alias")
    assert resp.header("x-alias") == "DELETE"


def test_http_simple_mutations_alias_as_listener_filter(upstream):
    """kgateway v2.2 named the filter http_simple_mutations, in both places."""
    config = gateway_config(upstream.port, [listener_filter("http_simple_mutations")],
                            [route("/", ALIAS, config_name="http_simple_mutations")])
    envoy = start_envoy(config)
    try:
        resp = envoy.request("PUT", "/")
        assert resp.header("x-alias") == "PUT"
        assert resp.header(MARKER) == "true"
    finally:
        envoy.stop()


def test_route_without_per_route_config_is_untouched(gw):
    big = b"z" * (100 * 1024)
    resp = gw.request("POST", "/plain", headers={"X-Powered-By": "client", "Content-Type": "text/plain"}, body=big)
    assert resp.status == 200
    assert resp.header(MARKER) is None
    assert resp.header("x-powered-by").startswith("httpbun/")
    sent = resp.json()
    assert sent["data"] == big.decode()
    assert sent["headers"]["Content-Length"] == str(len(big))


def test_virtual_host_level_config_and_route_level_replaces_it(upstream):
    config = gateway_config(upstream.port, [listener_filter()], [route("/own", VHOST_ROUTE), route("/", None)])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] = {FILTER: per_route("rustformation", VHOST)}
    envoy = start_envoy(config)
    try:
        inherited = envoy.request("GET", "/")
        assert inherited.status == 200
        assert inherited.header("x-level") == "virtual-host"
        assert inherited.header("x-vhost-only") == "v"
        own = envoy.request("GET", "/own")
        assert own.status == 200
        assert own.header("x-level") == "route"
        assert own.header("x-vhost-only") is None  # replaced, not merged
    finally:
        envoy.stop()


def test_route_configuration_level_config(upstream):
    """A Gateway-targeted policy lands at route-configuration level."""
    config = gateway_config(upstream.port, [listener_filter()], [route("/", None)])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["typed_per_filter_config"] = {FILTER: per_route("rustformation", ALIAS)}
    envoy = start_envoy(config)
    try:
        resp = envoy.request("PATCH", "/")
        assert resp.header("x-alias") == "PATCH"
    finally:
        envoy.stop()


@pytest.mark.parametrize("setting,name,value", [
    ("X-Via: team-a", "x-via", "team-a"),
    ("off", None, None),
    ("", None, None),
])
def test_marker_header_env_override(upstream, setting, name, value):
    config = gateway_config(upstream.port, [listener_filter()], [route("/", ALIAS)])
    envoy = start_envoy(config, env={"RUSTFORMATION_MARKER_HEADER": setting})
    try:
        resp = envoy.request("GET", "/")
        assert resp.header("x-alias") == "GET"
        assert resp.header(MARKER) is None
        if name:
            assert resp.header(name) == value
    finally:
        envoy.stop()


# --- Config rejection ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy,needle", [
    ("{not json", "rejected"),
    ('{"request":{"set":[{"name":"x","value":"{{ unclosed"}]}}', "request.set[0].value"),
    ('{"request":{"body":{"parseAs":"AsXml"}}}', "parseAs"),
    ('{"request":{"set":"not a list"}}', "request.set"),
    ("", "empty"),
])
def test_invalid_per_route_config_stops_envoy_with_a_clear_log_line(upstream, policy, needle):
    config = gateway_config(upstream.port, [listener_filter()], [route("/", policy)])
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    logs = envoy.logs()
    assert "rustformation" in logs
    assert needle in logs, logs[-3000:]


def test_unknown_per_route_config_name_is_refused_cleanly(upstream):
    config = gateway_config(upstream.port, [listener_filter()], [route("/", "{}", config_name="no-such-filter")])
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    logs = envoy.logs()
    assert "unknown filter name 'no-such-filter'" in logs
    assert "panic" not in logs.lower()


def test_version_under_test_is_known():
    assert envoy_minor() in (36, 37, 38, 39, 40), ENVOY_VERSION


# The TrafficPolicy of the README's "Using it with kgateway", as kgateway serializes its spec.transformation.
DOC_EXAMPLE = r'''{"request":{"body":{"parseAs":"AsJson","value":"{\"model\": \"{{ model }}\", \"messages\": {{ context().messages | tojson }}}"},
"set":[{"name":"x-model","value":"{{ model }}"}],
"dynamicMetadata":[{"namespace":"team.example","key":"model","value":{"stringValue":"{{ model }}"}}]},
"response":{"set":[{"name":"x-smart-header","value":"method=%REQ(:METHOD)%&path=%REQ(:PATH)%"},
{"name":"x-client-path","value":"{{ request_header(\":path\") }}"}],"remove":["x-powered-by"]}}'''


def test_the_documented_example(upstream):
    config = gateway_config(upstream.port, [listener_filter()],
                            [route("/v1/chat/completions", DOC_EXAMPLE, rewrite="/anything/llm")])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["response_headers_to_add"] = [
        {"header": {"key": "x-md", "value": "%DYNAMIC_METADATA(team.example:model)%"}}]
    envoy = start_envoy(config)
    try:
        body = json.dumps({"model": "gpt-4", "stream": False, "messages": [{"role": "user", "content": "Hi"}]})
        resp = envoy.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=body)
        assert resp.status == 200
        sent = resp.json()
        assert sent["url"].endswith("/anything/llm")
        assert sent["json"] == {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}
        assert sent["headers"]["Content-Length"] == str(len(sent["data"]))
        assert sent["headers"]["X-Model"] == "gpt-4"
        assert resp.header("x-md") == "gpt-4"
        assert resp.header("x-smart-header") == "method=POST&path=/v1/chat/completions"
        assert resp.header("x-client-path") == "/v1/chat/completions"
        assert resp.header("x-powered-by") is None
        assert resp.header(MARKER) == "true"
    finally:
        envoy.stop()
