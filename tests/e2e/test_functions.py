"""The functions beyond kgateway (`regex_extract`, `query_param`, `set_query_param`,
`remove_query_param`, `json_set`, `json_delete`, `metadata`), end to end in the real Envoy.

Each README recipe is sent through Envoy with the module, configured as kgateway emits a
TrafficPolicy (a disabled listener filter, the policy JSON per route), and the exact request the
upstream received (httpbun's /anything echo: `url` is the request target as sent, `data` the body
bytes) or the exact client response is checked. `metadata()` is fed by Envoy's native
`envoy.filters.http.header_to_metadata` filter, which runs in front of ours, and by route metadata.
The same functions are checked in `my-smart-header` values, and a bad literal pattern or metadata
argument is refused at load.
"""

from __future__ import annotations

import json
import re

import pytest

from envoy_harness import gateway_config, module_filter, per_route, start_envoy

FILTER = "dynamic_modules/simple_mutations"
H2M = "envoy.filters.http.header_to_metadata"
H2M_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
OUR_ERROR = re.compile(r"\[error\]\[dynamic_modules\].*?(rust_module: .*)$")

# --- The README recipes, as a TrafficPolicy's spec.transformation -------------------------------

REGEX = r'''{"request":{"set":[
 {"name":"x-tenant-id","value":"{{ regex_extract(header(\"x-user\"), \"tenant=([a-z0-9-]+)\", 1) }}"},
 {"name":"x-digits","value":"{{ regex_extract(header(\"x-user\"), \"(?P<n>\\\\d+)\", group=\"n\") }}"},
 {"name":"x-no-match","value":"{{ regex_extract(header(\"x-user\"), \"nomatch(x)\", 1) }}"}]},
"response":{"set":[{"name":"x-served-tenant","value":"{{ regex_extract(request_header(\"x-user\"), \"tenant=([a-z0-9-]+)\", 1) }}"}]}}'''

API_VERSION = r'''{"request":{"set":[{"name":":path","value":"{{ set_query_param(header(\":path\"), \"api-version\", \"2024-06-01\") }}"}]}}'''

DROP_DEBUG = r'''{"request":{"set":[{"name":":path","value":"{{ remove_query_param(header(\":path\"), \"debug\") }}"}]}}'''

QUERY_READ = r'''{"request":{"set":[{"name":"x-page","value":"{{ query_param(\"page\") }}"}]},
"response":{"set":[{"name":"x-q","value":"{{ query_param(\"q\") }}"}]}}'''

JSON_MODEL = r'''{"request":{"body":{"value":"{{ json_set(body(), \"/model\", \"gpt-4o-mini\") }}"}}}'''

JSON_MAX_TOKENS = r'''{"request":{"body":{"value":"{{ json_set(body(), \"/max_tokens\", \"256\", raw=true) }}"}}}'''

JSON_DELETE = r'''{"request":{"body":{"value":"{{ json_delete(body(), \"/user\") }}"}}}'''

METADATA = r'''{"request":{"set":[{"name":"x-tenant","value":"{{ metadata(\"rf.e2e.h2m\", \"tenant\") }}"}]},
"response":{"set":[
 {"name":"x-tenant","value":"{{ metadata(\"rf.e2e.h2m\", \"tenant\") }}"},
 {"name":"x-owner","value":"{{ metadata(\"team\", \"owner\", source=\"route\") }}"},
 {"name":"x-absent","value":"{{ metadata(\"rf.e2e.h2m\", \"nope\") }}"}]}}'''

# A chat request written the way clients write them: odd spacing, escapes, exact numbers.
CHAT = ('{ "model" : "gpt-4",\n  "messages": [{"role": "user", "content": "Caf\\u00e9 \\"quoted\\""}],\n'
        '  "temperature": 0.70, "max_tokens": 1.0e3, "user": "u-1" }\n')


def route(prefix: str, policy: str | None, **extra) -> dict:
    entry = {"match": {"prefix": prefix}, "route": {"cluster": "httpbun", "prefix_rewrite": "/anything"}}
    if policy is not None:
        entry["typed_per_filter_config"] = {FILTER: per_route("rustformation", policy)}
    entry.update(extra)
    return entry


def header_to_metadata() -> dict:
    """Envoy's native filter: request header `x-tenant` becomes dynamic metadata rf.e2e.h2m/tenant."""
    return {"name": H2M, "typed_config": {"@type": H2M_TYPE, "request_rules": [{
        "header": "x-tenant",
        "on_header_present": {"metadata_namespace": "rf.e2e.h2m", "key": "tenant", "type": "STRING"},
        "remove": True,
    }]}}


@pytest.fixture(scope="module")
def gw(upstream):
    routes = [
        route("/t/regex", REGEX),
        route("/t/api-version", API_VERSION),
        route("/t/drop-debug", DROP_DEBUG),
        route("/t/query-read", QUERY_READ),
        route("/t/json-model", JSON_MODEL),
        route("/t/json-max-tokens", JSON_MAX_TOKENS),
        route("/t/json-delete", JSON_DELETE),
        route("/t/metadata", METADATA, metadata={"filter_metadata": {"team": {"owner": "payments"}}}),
    ]
    filters = [header_to_metadata(),
               module_filter("rustformation", "{}", http_filter_name=FILTER, disabled=True)]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes))
    yield envoy
    envoy.stop()


def echo(resp) -> dict:
    assert resp.status == 200, (resp.status, resp.body[:300])
    return resp.json()


def target(url: str) -> str:
    """The request target the upstream received (httpbun's `url` without scheme and host)."""
    return re.sub(r"^https?://[^/]*", "", url)


def test_regex_extract(gw):
    resp = gw.request("GET", "/t/regex", headers={"X-User": "id=4711; tenant=acme-eu; role=admin"})
    got = echo(resp)["headers"]
    assert got.get("X-Tenant-Id") == "acme-eu"
    assert got.get("X-Digits") == "4711"
    assert "X-No-Match" not in got, "no match renders empty: the header is not set"
    assert resp.header("x-served-tenant") == "acme-eu"


def test_recipe_add_api_version_to_every_request(gw):
    got = echo(gw.request("GET", "/t/api-version?b=%2F+x&c"))
    assert target(got["url"]) == "/anything?b=%2F+x&c&api-version=2024-06-01"
    got = echo(gw.request("GET", "/t/api-version"))
    assert target(got["url"]) == "/anything?api-version=2024-06-01"
    got = echo(gw.request("GET", "/t/api-version?api-version=1999&z=1"))
    assert target(got["url"]) == "/anything?api-version=2024-06-01&z=1", "replaced in place"


def test_recipe_drop_debug_from_the_query(gw):
    got = echo(gw.request("GET", "/t/drop-debug?a=1&debug=true&b=%20x+y&debug"))
    assert target(got["url"]) == "/anything?a=1&b=%20x+y"
    got = echo(gw.request("GET", "/t/drop-debug?debug=1"))
    assert target(got["url"]) == "/anything"
    got = echo(gw.request("GET", "/t/drop-debug?keep=%zz"))
    assert target(got["url"]) == "/anything?keep=%zz", "untouched when absent"


def test_query_param_in_both_directions(gw):
    resp = gw.request("GET", "/t/query-read?page=3&q=au+lait%21&page=4")
    got = echo(resp)
    assert got["headers"].get("X-Page") == "3"
    assert resp.header("x-q") == "au lait!"


def test_recipe_change_model_keeps_every_other_byte(gw):
    got = echo(gw.request("POST", "/t/json-model", headers={"Content-Type": "application/json"}, body=CHAT))
    assert got["data"] == CHAT.replace('"gpt-4"', '"gpt-4o-mini"')
    assert got["headers"].get("Content-Length") == str(len(got["data"].encode()))


def test_recipe_set_max_tokens_as_a_number(gw):
    got = echo(gw.request("POST", "/t/json-max-tokens", headers={"Content-Type": "application/json"}, body=CHAT))
    assert got["data"] == CHAT.replace("1.0e3", "256")
    assert got["json"]["max_tokens"] == 256


def test_recipe_delete_a_field(gw):
    got = echo(gw.request("POST", "/t/json-delete", headers={"Content-Type": "application/json"}, body=CHAT))
    assert got["data"] == CHAT.replace(', "user": "u-1"', "")


def test_recipe_change_model_in_a_2_mb_chat_request(upstream):
    # Envoy buffers the request for the body value: the listener's buffer limit (1 MiB by
    # default) is raised as a gateway carrying such requests would.
    config = gateway_config(upstream.port, [module_filter("rustformation", "{}", http_filter_name=FILTER,
                                                          disabled=True)], [route("/", JSON_MODEL)])
    config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = 8 * 1024 * 1024
    turn = {"role": "user", "content": "Caf\u00e9 " + "x" * 1000}
    chat = json.dumps({"model": "gpt-4", "messages": [turn] * 2000, "temperature": 0.70}, indent=1)
    assert len(chat) > 2_000_000
    envoy = start_envoy(config)
    try:
        got = echo(envoy.request("POST", "/", headers={"Content-Type": "application/json"}, body=chat,
                                 timeout=30))
    finally:
        envoy.stop()
    expected = chat.replace('"gpt-4"', '"gpt-4o-mini"', 1)
    assert got["data"] == expected
    assert got["headers"].get("Content-Length") == str(len(expected.encode()))


def test_json_set_on_a_body_that_is_not_json_empties_it(gw):
    got = echo(gw.request("POST", "/t/json-model", headers={"Content-Type": "text/plain"}, body="not json"))
    assert got["data"] == ""
    assert got["headers"].get("Content-Length") == "0"


def test_recipe_metadata_from_header_to_metadata_and_the_route(gw):
    resp = gw.request("GET", "/t/metadata", headers={"X-Tenant": "acme"})
    got = echo(resp)
    assert "X-Tenant" in got["headers"] and got["headers"]["X-Tenant"] == "acme", \
        "header_to_metadata removed the client's header; ours set it back from the metadata"
    assert resp.header("x-tenant") == "acme", "the response side reads it too"
    assert resp.header("x-owner") == "payments", "route metadata"
    assert resp.header("x-absent") is None, "absent metadata renders empty"
    resp = gw.request("GET", "/t/metadata")
    assert "X-Tenant" not in echo(resp)["headers"]
    assert resp.header("x-tenant") is None
    assert resp.header("x-owner") == "payments"


def test_my_smart_header_values_have_the_functions(upstream, envoys):
    config = json.dumps({"response_headers": [
        {"name": "x-page", "value": '{{ query_param("page") }}'},
        {"name": "x-id", "value": '{{ regex_extract(request_header("x-user"), "[0-9]+") }}'},
        {"name": "x-tenant", "value": '{{ metadata("rf.e2e.h2m", "tenant") }}'},
    ], "request_headers": [
        {"name": ":path", "value": '{{ set_query_param(header(":path"), "api-version", "2024-06-01") }}'},
    ]})
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun", "prefix_rewrite": "/anything"}}]
    envoy = start_envoy(gateway_config(upstream.port, [header_to_metadata(), module_filter("my-smart-header", config)],
                                       routes))
    envoys.append(envoy)
    resp = envoy.request("GET", "/?page=5", headers={"X-User": "user-42", "X-Tenant": "globex"})
    got = echo(resp)
    assert target(got["url"]) == "/anything?page=5&api-version=2024-06-01"
    assert resp.header("x-page") == "5"
    assert resp.header("x-id") == "42"
    assert resp.header("x-tenant") == "globex"
    assert resp.header("x-custom-transformed") == "true"


@pytest.mark.parametrize("value, expect", [
    (r'{{ regex_extract(header(\"a\"), \"(unclosed\") }}', ["regex_extract: invalid pattern", "unclosed group"]),
    (r'{{ metadata(header(\"a\"), \"k\") }}', ["metadata(namespace, key[, source]) takes string literals"]),
], ids=["invalid-literal-regex", "computed-metadata-namespace"])
def test_bad_arguments_are_refused_at_load_with_the_field(upstream, envoys, value, expect):
    policy = '{"response": {"set": [{"name": "x-a", "value": "%s"}]}}' % value
    envoy = start_envoy(gateway_config(upstream.port, [module_filter("rustformation", policy)],
                                       [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]),
                        expect_failure=True)
    envoys.append(envoy)
    lines = [m.group(1) for m in map(OUR_ERROR.search, envoy.logs().splitlines()) if m]
    assert envoy.proc.returncode is not None and envoy.proc.returncode > 0
    assert len(lines) == 1, lines
    for fragment in ["filter 'rustformation'", "response.set[0].value", *expect]:
        assert fragment in lines[0], (fragment, lines[0])
