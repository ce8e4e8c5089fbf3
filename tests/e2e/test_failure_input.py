"""Bad input at request time, against the real Envoy: nothing a client sends makes us emit an
invalid header, panic, buffer without bound or render without bound.

One Envoy serves every case; each route under /anything/<case> carries its own per-route
rustformation config, the way kgateway sends it (disabled listener filter + per-route config).
"""

import base64
import json
import pathlib
import re
import tempfile
import time
import uuid

import pytest

from envoy_harness import envoy_minor, gateway_config, module_filter, per_route, start_envoy

PREFIX = "dynamicmodulescustom.rustformation."
DROPPED = PREFIX + "invalid_header_dropped"
RENDER_ERRORS = PREFIX + "render_errors"
PANICS = "dynamicmodulescustom.rust_module_panics"
FILTER = "dynamic_modules/simple_mutations"
# Envoy 1.36's local-reply callback has no details argument: Envoy records its own generic value.
JSON_DETAILS = "dynamic_module" if envoy_minor() == 36 else "json_parsing_error_in_transformation_template"
# The listener's buffer limit: the bound on what any buffering filter (ours included) may hold.
BUFFER_LIMIT = 64 * 1024


def route(case: str, transformation: dict) -> dict:
    return {
        "match": {"prefix": f"/anything/{case}"},
        "route": {"cluster": "httpbun"},
        "typed_per_filter_config": {FILTER: per_route("rustformation", json.dumps(transformation))},
    }


def echo_response(template: str) -> dict:
    """Sets the template's result as x-echo on the response only."""
    return {"response": {"set": [{"name": "x-echo", "value": template}, {"name": "x-after", "value": "ok"}]}}


def echo_header(template: str) -> dict:
    """Sets the template's result as x-echo on the request (seen upstream) and the response."""
    return {
        "request": {"set": [{"name": "x-echo", "value": template}]},
        "response": {"set": [{"name": "x-echo", "value": template}, {"name": "x-after", "value": "ok"}]},
    }


def without_raw(transformation: dict) -> dict:
    """The test upstream refuses header bytes that are not ASCII, so the raw header stops at Envoy."""
    transformation["request"] = {"remove": ["x-raw"]}
    return transformation


ROUTES = [
    route("b64", echo_header("{{ base64_decode(request_header('x-b64')) }}")),
    route("raw", without_raw(echo_response("{{ request_header('x-raw') }}"))),
    route("op", without_raw(echo_response("v=%REQ(x-raw)%"))),
    route("json", {"request": {"body": {"parseAs": "AsJson", "value": "{{ name }}"}}}),
    route("string-body", {"request": {"body": {"value": "[{{ body() }}]"}}}),
    route("buffered", {"request": {"body": {"value": "{{ body() | length }}"}},
                       "response": {"set": [{"name": "x-transformed", "value": "yes"}]}}),
    route("big-response", {"response": {"body": {"value": "{{ body() | length }}"}}}),
    route("fuel", {"response": {"set": [
        {"name": "x-spin", "value": "{% for i in range(100000000) %}{% endfor %}done"},
        {"name": "x-after", "value": "ok"}]}}),
    route("huge-header", {"response": {"set": [
        {"name": "x-huge", "value": "{% for i in range(2000) %}{{ request_header('x-big') }}{% endfor %}"},
        {"name": "x-after", "value": "ok"}]}}),
    route("huge-body", {"request": {"body": {"value": "{% for i in range(600) %}{{ body() }}{% endfor %}"}}}),
    {"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}},
]

ACCESS_LOG_PATH = pathlib.Path(tempfile.mkdtemp(prefix="failure-input-")) / "access.log"
ACCESS_LOG = {
    "access_log": [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(ACCESS_LOG_PATH),
            "log_format": {"text_format_source": {
                "inline_string": "ACCESS %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}},
        },
    }],
}


@pytest.fixture(scope="module")
def envoy(upstream):
    filters = [module_filter("rustformation", "{}", http_filter_name=FILTER, disabled=True)]
    config = gateway_config(upstream.port, filters, ROUTES, hcm_extra=ACCESS_LOG)
    config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
    # Access log lines reach the file within 50 ms instead of Envoy's default 10 s.
    proxy = start_envoy(config, extra_args=["--file-flush-interval-msec", "50"])
    yield proxy
    # Whatever the cases sent, nothing panicked and Envoy is still up.
    assert proxy.alive()
    assert proxy.stats().get(PANICS, 0) == 0
    proxy.stop()


def unique(path: str) -> str:
    """A path only one request uses, so its access log line is unambiguous."""
    return f"{path}/{uuid.uuid4().hex}"


def details(envoy, path: str) -> str:
    """Response code details of the request to `path` (the access log is written
    asynchronously, so wait for its line)."""
    deadline = time.time() + 5
    while True:
        log = ACCESS_LOG_PATH.read_text() if ACCESS_LOG_PATH.exists() else ""
        lines = re.findall(rf"ACCESS {re.escape(path)} (\d+) (\S+)", log)
        if lines or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, f"expected one access log line for {path}: {lines}"
    return lines[0][1]


def counter(envoy, name: str) -> int:
    return envoy.stats().get(name, 0)


@pytest.mark.parametrize("payload", [b"a\r\nx-evil: 1", b"a\nx-evil: 1", b"a\rb", b"a\x00b"],
                         ids=["crlf", "lf", "cr", "nul"])
def test_decoded_control_characters_are_never_emitted(envoy, payload):
    before = counter(envoy, DROPPED)
    resp = envoy.request("GET", "/anything/b64", headers={"X-B64": base64.b64encode(payload).decode()})
    assert resp.status == 200
    # Not on the response, not smuggled as a second header, and the rest still applied.
    assert resp.header("x-echo") is None
    assert resp.header("x-evil") is None
    assert resp.header("x-after") == "ok"
    # Not sent upstream either.
    upstream_headers = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert "x-echo" not in upstream_headers and "x-evil" not in upstream_headers
    # Dropped once on the request side and once on the response side.
    assert counter(envoy, DROPPED) == before + 2
    assert "rustformation: response.set[0].value: rendered header value contains CR, LF or NUL; " \
        "header not emitted" in envoy.logs()


def test_a_clean_decoded_value_is_emitted(envoy):
    resp = envoy.request("GET", "/anything/b64", headers={"X-B64": base64.b64encode(b"fine value").decode()})
    assert resp.status == 200
    assert resp.header("x-echo") == "fine value"


@pytest.mark.parametrize("path", ["/anything/raw", "/anything/op"])
def test_non_utf8_header_values_do_not_panic(envoy, path):
    # http.client sends str header values as latin-1: "\xff\xfe" goes out as the raw bytes FF FE.
    resp = envoy.request("GET", path, headers={"X-Raw": "caf\xe9 \xff\xfe"})
    assert resp.status == 200
    echoed = resp.header("x-echo")
    assert echoed is not None and "caf" in echoed
    assert resp.header("x-after") == "ok"


def test_non_utf8_body_as_string_does_not_panic(envoy):
    body = b"\xff\xfe\x00binary\x80"
    resp = envoy.request("POST", "/anything/string-body", body=body)
    assert resp.status == 200
    # The body is read lossily as text; the invalid bytes become U+FFFD, NUL passes.
    assert resp.json()["data"] == "[\ufffd\ufffd\x00binary\ufffd]"


@pytest.mark.parametrize("body", [b'{"name": ', b"not json", b"\xff\xfe", b'{"name": "x"} trailing'],
                         ids=["truncated", "text", "non-utf8", "trailing"])
def test_malformed_json_with_asjson_answers_400(envoy, body):
    path = unique("/anything/json")
    resp = envoy.request("POST", path, headers={"Content-Type": "application/json"}, body=body)
    assert resp.status == 400
    assert resp.body == b""
    assert details(envoy, path) == JSON_DETAILS


def test_valid_json_with_asjson_is_rendered(envoy):
    resp = envoy.request("POST", "/anything/json", body=b'{"name": "ada"}')
    assert resp.status == 200
    assert resp.json()["data"] == "ada"


def test_deeply_nested_json_is_a_400_not_a_stack_overflow(envoy):
    depth = 20_000  # 40 KB, under the buffer limit
    path = unique("/anything/json")
    resp = envoy.request("POST", path, body=b"[" * depth + b"]" * depth)
    assert resp.status == 400
    assert details(envoy, path) == JSON_DETAILS
    resp = envoy.request("POST", "/anything/json", body=b'{"a":' * 200 + b"1" + b"}" * 200)
    assert resp.status == 400
    assert envoy.alive()


def test_json_nesting_limit_is_128_levels(envoy):
    # 127 levels parse (the object plus 126 arrays); 128 levels are a 400, as documented.
    def body(levels):
        inner = levels - 1
        return b'{"name": "ada", "x": ' + b"[" * inner + b"]" * inner + b"}"

    resp = envoy.request("POST", "/anything/json", body=body(127))
    assert resp.status == 200
    assert resp.json()["data"] == "ada"
    resp = envoy.request("POST", "/anything/json", body=body(128))
    assert resp.status == 400


def test_request_body_over_the_buffer_limit_is_413_from_envoy(envoy):
    path = unique("/anything/buffered")
    resp = envoy.request("POST", path, body=b"x" * (4 * BUFFER_LIMIT))
    assert resp.status == 413
    assert details(envoy, path) == "request_payload_too_large"
    # Envoy's own local reply still passes our response transformation.
    assert resp.header("x-transformed") == "yes"
    # Under the limit the whole body is buffered and transformed.
    resp = envoy.request("POST", "/anything/buffered", body=b"x" * (BUFFER_LIMIT // 2))
    assert resp.status == 200
    assert resp.json()["data"] == str(BUFFER_LIMIT // 2)


def test_response_body_over_the_buffer_limit_is_refused_by_envoy(envoy):
    # The request streams (nothing to do on it); the upstream echoes it back, larger than the
    # limit, and our response side must buffer it: Envoy ends it with a 500 rather than let
    # the buffer grow.
    path = unique("/anything/big-response")
    resp = envoy.request("POST", path, body=b"y" * (2 * BUFFER_LIMIT))
    assert resp.status == 500
    assert details(envoy, path) == "response_payload_too_large"
    resp = envoy.request("POST", "/anything/big-response", body=b"y" * 100)
    assert resp.status == 200
    assert int(resp.body) > 100


def test_runaway_loop_is_stopped_by_fuel(envoy):
    before = counter(envoy, RENDER_ERRORS)
    resp = envoy.request("GET", "/anything/fuel")
    # Documented answer: the value fails to render, the header is removed, the rest applies.
    assert resp.status == 200
    assert resp.header("x-spin") is None
    assert resp.header("x-after") == "ok"
    assert counter(envoy, RENDER_ERRORS) == before + 1


def test_huge_header_output_is_stopped_by_the_cap(envoy):
    before = counter(envoy, RENDER_ERRORS)
    resp = envoy.request("GET", "/anything/huge-header", headers={"X-Big": "z" * 4096})
    assert resp.status == 200
    assert resp.header("x-huge") is None
    assert resp.header("x-after") == "ok"
    assert counter(envoy, RENDER_ERRORS) == before + 1


def test_huge_body_output_is_stopped_by_the_cap(envoy):
    before = counter(envoy, RENDER_ERRORS)
    # 600 copies of a 16 KiB body would be 9.6 MiB, over the 4 MiB body cap.
    resp = envoy.request("POST", "/anything/huge-body", body=b"w" * 16384)
    assert resp.status == 200
    # Documented answer: a body that fails to render becomes empty.
    assert resp.json()["data"] == ""
    assert counter(envoy, RENDER_ERRORS) == before + 1
