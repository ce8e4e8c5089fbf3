"""Every way a config can be wrong is refused at load by the real Envoy, with one log line.

Each case starts Envoy with a static config holding the bad filter (or per-route) config and
checks: Envoy refuses it (exits with an error status, never a signal) and our module wrote
exactly one error line that names the filter, the field and the problem.

`python tests/e2e/test_failure_config.py` prints the Markdown table of docs/failure-behaviour.md
from a real run (the lines are Envoy's actual log output).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass

import pytest

from envoy_harness import Upstream, gateway_config, module_filter, per_route, start_envoy

BYTES_VALUE = "type.googleapis.com/google.protobuf.BytesValue"
ROUTES = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
# Our module logs through Envoy's `dynamic_modules` logger; every line we write starts so.
OUR_ERROR = re.compile(r"\[error\]\[dynamic_modules\].*?(rust_module: .*)$")


def bytes_filter(filter_name: str, raw: bytes) -> dict:
    """A filter whose config is a BytesValue: Envoy hands us the raw bytes unwrapped."""
    entry = module_filter(filter_name, None)
    entry["typed_config"]["filter_config"] = {"@type": BYTES_VALUE, "value": base64.b64encode(raw).decode()}
    return entry


def transformation_route(config: str) -> list[dict]:
    """A route carrying a per-route rustformation config, under a disabled listener filter."""
    return [{
        "match": {"prefix": "/"},
        "route": {"cluster": "httpbun"},
        "typed_per_filter_config": {"dynamic_modules/simple_mutations": per_route("rustformation", config)},
    }]


KGATEWAY_LISTENER = [module_filter("rustformation", "{}", http_filter_name="dynamic_modules/simple_mutations",
                                   disabled=True)]


@dataclass
class Case:
    id: str
    what: str
    filters: list[dict]
    # Substrings the single log line must hold: the filter, the field (when there is one), the problem.
    expect: list[str]
    routes: list[dict] | None = None
    env: dict | None = None


CASES = [
    Case("invalid-json", "transformation config is not JSON",
         [module_filter("rustformation", '{"request": {"set": [}')],
         ["filter 'rustformation'", "invalid json", "expected value"]),
    Case("not-an-object", "config is JSON but neither an object nor an array",
         [module_filter("rustformation", '"request"')],
         ["filter 'rustformation'", "invalid json", "expected struct TransformationConfig"]),
    Case("wrong-type", "a header name is a number",
         [module_filter("rustformation", '{"request": {"set": [{"name": 3, "value": "x"}]}}')],
         ["filter 'rustformation'", "request.set[0].name", "invalid type: integer `3`"]),
    Case("wrong-type-list", "`remove` is a string, not a list",
         [module_filter("rustformation", '{"response": {"remove": "x-a"}}')],
         ["filter 'rustformation'", "response.remove", "expected a sequence"]),
    Case("unknown-parseas", "unknown `parseAs`",
         [module_filter("rustformation", '{"request": {"body": {"parseAs": "AsXml", "value": "x"}}}')],
         ["filter 'rustformation'", "request.body.parseAs", "unknown variant `AsXml`"]),
    Case("template-syntax", "template syntax error",
         [module_filter("rustformation", '{"request": {"set": [{"name": "x-a", "value": "{{ header(\\"a\\" }}"}]}}')],
         ["filter 'rustformation'", "request.set[0].value", "invalid template", "syntax error"]),
    Case("template-unclosed-block", "unclosed `{% if %}` block in a body template",
         [module_filter("rustformation", '{"response": {"body": {"value": "{% if true %}x"}}}')],
         ["filter 'rustformation'", "response.body.value", "invalid template"]),
    Case("null-value", "a header value is `null` (kgateway refuses it too)",
         [module_filter("rustformation", '{"response": {"add": [{"name": "x-a", "value": null}]}}')],
         ["filter 'rustformation'", "response.add[0].value", "invalid type: null"]),
    Case("unknown-operator", "unknown Envoy command operator",
         [module_filter("rustformation", '{"request": {"set": [{"name": "x-a", "value": "%NO_SUCH_OP%"}]}}')],
         ["filter 'rustformation'", "request.set[0].value", "invalid command operator", "NO_SUCH_OP"]),
    Case("broken-operator", "malformed `%REQ(` operator",
         [module_filter("rustformation", '{"request": {"set": [{"name": "x-a", "value": "%REQ(x-b%"}]}}')],
         ["filter 'rustformation'", "request.set[0].value", "invalid command operator"]),
    Case("metadata-without-namespace", "a dynamicMetadata entry without `namespace` (kgateway refuses it too)",
         [module_filter("rustformation", '{"request": {"dynamicMetadata": [{"key": "k", "value": {"stringValue": "v"}}]}}')],
         ["filter 'rustformation'", "request.dynamicMetadata[0]", "missing field `namespace`"]),
    Case("literal-crlf", "literal header value with CR/LF",
         [module_filter("rustformation", '{"response": {"set": [{"name": "x-a", "value": "a\\r\\nx-evil: 1"}]}}')],
         ["filter 'rustformation'", "response.set[0].value", "invalid value"]),
    Case("non-utf8-bytes", "BytesValue config with bytes that are not UTF-8",
         [bytes_filter("rustformation", b'{"response": {"set": [{"name": "x-a", "value": "\xff\xfe"}]}}')],
         ["filter 'rustformation'", "invalid utf-8", "offset 48"]),
    Case("empty-transformation", "empty config where one is required",
         [module_filter("rustformation", "")],
         ["filter 'rustformation'", "the config is empty"]),
    Case("missing-config", "no filter_config at all",
         [module_filter("http_simple_mutations", None)],
         ["filter 'http_simple_mutations'", "the config is empty"]),
    Case("per-route-template", "per-route config with a template syntax error",
         KGATEWAY_LISTENER, ["per-route config 'rustformation'", "response.set[0].value", "invalid template"],
         routes=transformation_route('{"response": {"set": [{"name": "x-a", "value": "{{ 1 + }}"}]}}')),
    Case("per-route-json", "per-route config is not JSON",
         KGATEWAY_LISTENER, ["per-route config 'rustformation'", "invalid json: key must be a string"],
         routes=transformation_route("{oops")),
    Case("smart-header-json", "my-smart-header config is not its JSON",
         [module_filter("my-smart-header", '{"response_headers": 7}')],
         ["filter 'my-smart-header'", "response_headers", "invalid type"]),
    Case("acl-bad-cidr", "http-acl CIDR with a prefix too long",
         [module_filter("http-acl", '{"defaultAction": "deny", "rules": [{"cidrs": ["10.0.0.0/33"], "action": "allow"}]}')],
         ["filter 'http-acl'", "rules[0].cidrs[0]", "not a valid CIDR"]),
    Case("acl-host-bits", "http-acl CIDR with host bits set",
         [module_filter("http-acl", '{"defaultAction": "deny", "rules": [{"cidrs": ["10.1.2.3/8"], "action": "allow"}]}')],
         ["filter 'http-acl'", "rules[0].cidrs[0]", "host bits"]),
    Case("acl-garbage-ip", "http-acl address that is not an IP",
         [module_filter("http-acl", '{"defaultAction": "allow", "rules": [{"cidrs": ["ten.0.0.1"], "action": "deny"}]}')],
         ["filter 'http-acl'", "rules[0].cidrs[0]", "not a valid IP address or CIDR"]),
    Case("acl-bad-action", "http-acl unknown action",
         [module_filter("http-acl", '{"defaultAction": "maybe"}')],
         ["filter 'http-acl'", "defaultAction", "maybe"]),
    Case("acl-missing-default", "http-acl without defaultAction",
         [module_filter("http-acl", '{"rules": []}')],
         ["filter 'http-acl'", "defaultAction"]),
    Case("acl-empty", "http-acl with an empty config",
         [module_filter("http-acl", "")],
         ["filter 'http-acl'", "the config is empty"]),
    Case("unknown-filter", "unknown filter name",
         [module_filter("no-such-filter", "{}")],
         ["no-such-filter", "unknown filter name"]),
    Case("test-filter-off", "test-only filter without RUST_MODULE_TEST_FILTERS=1",
         [module_filter("test-panic", '{"panic_on": "request_headers"}')],
         ["filter 'test-panic'", "RUST_MODULE_TEST_FILTERS"]),
    Case("test-filter-bad-config", "test-panic filter with an unknown panic point",
         [module_filter("test-panic", '{"panic_on": "never"}')],
         ["filter 'test-panic'", "panic_on", "unknown variant `never`"],
         env={"RUST_MODULE_TEST_FILTERS": "1"}),
]


def run_case(upstream_port: int, case: Case):
    config = gateway_config(upstream_port, case.filters, case.routes or ROUTES)
    envoy = start_envoy(config, env=case.env, expect_failure=True)
    lines = [m.group(1) for m in map(OUR_ERROR.search, envoy.logs().splitlines()) if m]
    return envoy, lines


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_refused_at_load_with_one_log_line(upstream, case):
    envoy, lines = run_case(upstream.port, case)
    assert envoy.proc.returncode is not None and envoy.proc.returncode > 0, \
        f"Envoy must refuse the config cleanly (exit status, not a signal): {envoy.proc.returncode}"
    assert len(lines) == 1, f"expected exactly one error line from the module, got {lines}"
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    # The line is one line: no embedded newline split the message.
    assert "rejected" in lines[0] or "unknown filter name" in lines[0] or "exists only for tests" in lines[0]
    # Envoy's own line confirms it was the module that refused the config.
    assert re.search(r"Failed to initialize (per-route )?dynamic module", envoy.logs())


def test_string_and_bytes_values_arrive_unwrapped(upstream, envoys):
    """The same valid JSON as a StringValue and as a BytesValue configures the same filter."""
    cfg = '{"response": {"set": [{"name": "x-from", "value": "{{ request_header(\\"x-in\\") }}"}]}}'
    filters = [bytes_filter("rustformation", cfg.encode()),
               module_filter("rustformation", cfg.replace("x-from", "x-from-string"), http_filter_name="second")]
    envoy = start_envoy(gateway_config(upstream.port, filters, ROUTES))
    envoys.append(envoy)
    resp = envoy.request("GET", "/get", headers={"X-In": "v1"})
    assert resp.status == 200
    assert resp.header("x-from") == "v1"
    assert resp.header("x-from-string") == "v1"


def markdown_table() -> str:
    upstream = Upstream()
    try:
        rows = ["| case | what is wrong | log line (Envoy 1.37.0) |", "|---|---|---|"]
        for case in CASES:
            envoy, lines = run_case(upstream.port, case)
            line = lines[0] if len(lines) == 1 else f"UNEXPECTED: {lines}"
            rows.append(f"| `{case.id}` | {case.what} | `` {line.replace('|', '&#124;')} `` |")
        return "\n".join(rows)
    finally:
        upstream.stop()


if __name__ == "__main__":
    print(markdown_table())
    sys.exit(0)
