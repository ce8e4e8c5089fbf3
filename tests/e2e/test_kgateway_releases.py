"""One module, two kgateway releases: the module follows kgateway v2.3's template semantics in
Envoy 1.36 and 1.37 and v2.4's in Envoy 1.38 and later (the releases that ship them), says so once
at load, and takes `RUSTFORMATION_KGATEWAY_VERSION` from the Envoy process to override.

Where the releases differ: v2.4 reads a repeated header as its values joined with ", " (v2.3: the
last value). Both get v2.4's `get_cookie`/`get_cookie_i` (kgateway v2.4's own e2e cases
`get-cookie-basic` and `get-cookie-i-basic`), and JSON keys read only through a slice.
"""

from __future__ import annotations

import json

import pytest

from envoy_harness import gateway_config, kgateway_release, read_repeated, start_envoy
from test_kgateway_transformation import listener_filter, route

RELEASE_ENV = "RUSTFORMATION_KGATEWAY_VERSION"


def policy(request_set: list[tuple[str, str]], parse_as: str | None = None) -> str:
    side: dict = {"set": [{"name": n, "value": v} for n, v in request_set]}
    if parse_as:
        side["body"] = {"parseAs": parse_as}
    return json.dumps({"request": side})


# kgateway v2.4's e2e case `get-cookie-basic`, and `get-cookie-i-basic`.
GET_COOKIE = policy([("x-session", '{{ get_cookie("session") }}'), ("x-user", '{{ get_cookie("User") }}'),
                     ("x-foo", '{{ get_cookie("foo") }}'), ("x-test", '{{ get_cookie("test") }}'),
                     ("x-upper", '{{ get_cookie("SESSION") }}'), ("x-lower-user", '{{ get_cookie("user") }}'),
                     ("x-missing", '{{ get_cookie("missing") }}')])
GET_COOKIE_I = policy([("x-session", '{{ get_cookie_i("SESSION") }}')])
REPEATED = json.dumps({
    "request": {"set": [{"name": "x-joined", "value": '{{ request_header("x-dup") }}'},
                        {"name": "x-joined-header", "value": '{{ header("X-DUP") }}'}]},
    "response": {"set": [{"name": "x-resp-joined", "value": '{{ header("x-r") }}|{{ request_header("x-dup") }}'},
                         {"name": "x-prerendered", "value": '{{ request_header("x-dup") }}'}]}})
SLICES = policy([("x-s1", "{{ text[2:] }}"), ("x-s2", "{{ text[-3:] }}"), ("x-s3", "{{ (text[2:]) | upper }}"),
                 ("x-s4", "{{ nested.s[1:] }}"), ("x-s5", "<{{ model[:3] }}>")], parse_as="AsJson")
SLICE_BODY = b'{"text":"a-b_c.d","nested":{"s":"hello"},"model":"gpt-4o"}'
# Every construct above in one policy (the CLI runs it too: tests/e2e/test_cli_matches_envoy.py).
RELEASES_POLICY = json.dumps({"request": {"body": {"parseAs": "AsJson"}, "set": (
    json.loads(GET_COOKIE)["request"]["set"] + json.loads(SLICES)["request"]["set"]
    + json.loads(REPEATED)["request"]["set"])}, "response": json.loads(REPEATED)["response"]})
COOKIES = [("Cookie", "session=abc123; User=johndoe"), ("Cookie", "foo=bar; test=123")]
DUP = [("x-dup", "one"), ("X-Dup", "two")]


def start(upstream, envoys, env: dict[str, str] | None = None):
    routes = [route("/cookie-i", GET_COOKIE_I), route("/cookie", GET_COOKIE), route("/repeated", REPEATED),
              route("/slices", SLICES)]
    # A repeated response header, added by the router before the response reaches the filter.
    routes[2]["response_headers_to_add"] = [
        {"header": {"key": "x-r", "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"} for v in ("a", "b")]
    envoy = start_envoy(gateway_config(upstream.port, [listener_filter()], routes), env=env)
    envoys.append(envoy)
    return envoy


@pytest.fixture(scope="module")
def gw(upstream):
    envoys: list = []
    envoy = start(upstream, envoys)
    yield envoy
    envoy.stop()


def test_the_module_says_which_release_it_follows_and_why(gw, record_property):
    release = kgateway_release()
    record_property("kgateway_semantics", release)
    lines = [line for line in gw.logs().splitlines() if "following kgateway" in line]
    assert len(lines) == 1, lines
    assert f"following kgateway {release} semantics (detected Envoy " in lines[0]
    assert f"set {RELEASE_ENV}=v2.3 or v2.4 to change)" in lines[0]


def test_get_cookie_basic(gw):
    resp = gw.request("GET", "/cookie", headers=COOKIES)
    assert resp.status == 200
    sent = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert (sent["x-session"], sent["x-user"], sent["x-foo"], sent["x-test"]) == ("abc123", "johndoe", "bar", "123")
    for removed in ("x-upper", "x-lower-user", "x-missing"):
        assert removed not in sent, removed


def test_get_cookie_i_basic(gw):
    resp = gw.request("GET", "/cookie-i", headers=[("Cookie", "Session=abc123")])
    assert resp.status == 200
    assert {k.lower(): v for k, v in resp.json()["headers"].items()}["x-session"] == "abc123"


def test_a_repeated_header_reads_as_the_release_reads_it(gw):
    resp = gw.request("GET", "/repeated", headers=DUP)
    assert resp.status == 200
    sent = {k.lower(): v for k, v in resp.json()["headers"].items()}
    want = read_repeated(["one", "two"])
    assert sent["x-joined"] == want and sent["x-joined-header"] == want
    assert resp.header_values("x-r") == ["a", "b"]
    assert resp.header("x-resp-joined") == f"{read_repeated(['a', 'b'])}|{want}"
    assert resp.header("x-prerendered") == want


def test_json_keys_read_only_through_a_slice(gw):
    resp = gw.request("POST", "/slices", headers=[("content-type", "application/json")], body=SLICE_BODY)
    assert resp.status == 200
    sent = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert [sent[f"x-s{i}"] for i in range(1, 6)] == ["b_c.d", "c.d", "B_C.D", "ello", "<gpt>"]


@pytest.mark.parametrize("release", ["v2.3", "v2.4"])
def test_the_environment_overrides_the_release(upstream, envoys, release):
    envoy = start(upstream, envoys, env={RELEASE_ENV: release})
    assert f"following kgateway {release} semantics ({RELEASE_ENV}={release})" in envoy.logs()
    resp = envoy.request("GET", "/repeated", headers=DUP)
    sent = {k.lower(): v for k, v in resp.json()["headers"].items()}
    assert sent["x-joined"] == read_repeated(["one", "two"], release)
    resp = envoy.request("GET", "/cookie", headers=COOKIES)
    assert {k.lower(): v for k, v in resp.json()["headers"].items()}["x-session"] == "abc123"


def test_an_unknown_release_refuses_the_config_with_the_setting(upstream):
    routes = [route("/cookie", GET_COOKIE)]
    envoy = start_envoy(gateway_config(upstream.port, [listener_filter()], routes),
                        env={RELEASE_ENV: "v9.9"}, expect_failure=True)
    try:
        assert f'{RELEASE_ENV}="v9.9" is not a kgateway release this module follows; use v2.3 or v2.4' in envoy.logs()
    finally:
        envoy.stop()

