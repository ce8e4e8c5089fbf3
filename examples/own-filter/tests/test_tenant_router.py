"""tenant-router in the real Envoy, started with the example's envoy.yaml (the one
docs/writing-a-filter.md shows), only its ports changed."""

import pathlib
import re

import yaml

from envoy_harness import gateway_config, module_filter, set_upstream_port, start_envoy

EXAMPLE = pathlib.Path(__file__).resolve().parents[1]
OUR_ERROR = re.compile(r"\[error\]\[dynamic_modules\].*?(rust_module: .*)$")


def guide_envoy(upstream, envoys):
    config = yaml.safe_load((EXAMPLE / "envoy.yaml").read_text())
    set_upstream_port(config, upstream.port)
    envoy = start_envoy(config)
    envoys.append(envoy)
    return envoy


def test_a_request_without_the_key_gets_401(upstream, envoys):
    envoy = guide_envoy(upstream, envoys)
    resp = envoy.request("GET", "/anything")
    assert resp.status == 401
    assert resp.body == b"missing api key"
    assert resp.header("x-tenant-echo") is None


def test_the_tenant_goes_upstream_and_comes_back(upstream, envoys):
    envoy = guide_envoy(upstream, envoys)
    for key, tenant in [("acme.s3cr3t.x", "acme"), ("globex", "globex")]:
        resp = envoy.request("GET", "/anything", headers={"X-Api-Key": key, "X-Tenant": "forged"})
        assert resp.status == 200
        assert resp.json()["headers"]["X-Tenant"] == tenant
        assert resp.header_values("x-tenant-echo") == [tenant]


def test_the_config_names_the_key_header(upstream, envoys):
    filters = [module_filter("tenant-router", '{"header": "x-key"}')]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes))
    envoys.append(envoy)
    assert envoy.request("GET", "/get", headers={"X-Api-Key": "acme.1"}).status == 401
    resp = envoy.request("GET", "/get", headers={"X-Key": "initech.2"})
    assert resp.status == 200
    assert resp.header("x-tenant-echo") == "initech"


def test_the_built_in_filters_run_beside_it(upstream, envoys):
    filters = [
        module_filter("tenant-router", "{}"),
        module_filter("rustformation", '{"response": {"set": [{"name": "x-seen", "value": "{{ request_header(\\"x-tenant\\") }}"}]}}'),
    ]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes))
    envoys.append(envoy)
    resp = envoy.request("GET", "/get", headers={"X-Api-Key": "acme.1"})
    assert resp.status == 200
    assert resp.header("x-seen") == "acme"
    assert resp.header("x-tenant-echo") == "acme"


def test_a_bad_config_is_refused_at_load_with_one_line(upstream):
    for config, fragment in [
        ("[1]", "expected a JSON object, found an array"),
        ('"x"', "expected a JSON object, found a string"),
        ("1", "expected a JSON object, found a number"),
        ('{"header": 7}', "invalid type: integer `7`, expected a string"),
        ('{"header": "x", "other": 1}', "unknown field `other`"),
    ]:
        filters = [module_filter("tenant-router", config)]
        routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
        envoy = start_envoy(gateway_config(upstream.port, filters, routes), expect_failure=True)
        lines = [m.group(1) for m in map(OUR_ERROR.search, envoy.logs().splitlines()) if m]
        assert envoy.proc.returncode is not None and envoy.proc.returncode > 0, envoy.proc.returncode
        assert len(lines) == 1, lines
        assert lines[0].startswith("rust_module: filter 'tenant-router' rejected its config: tenant-router: "), lines[0]
        assert fragment in lines[0], lines[0]


def test_an_unknown_name_lists_tenant_router_among_the_filters(upstream):
    filters = [module_filter("no-such-filter", "{}")]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes), expect_failure=True)
    assert ("unknown filter name 'no-such-filter'; this module provides my-smart-header, rustformation, "
            "http_simple_mutations, http-acl, request-size-limit and tenant-router") in envoy.logs()
