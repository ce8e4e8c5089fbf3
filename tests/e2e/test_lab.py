"""The lab, end to end: the repository's envoy.yaml in the real Envoy with our module."""

import json

from envoy_harness import gateway_config, lab_config, module_filter, start_envoy

CHAT = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]})


def start_lab(upstream, envoys, **kw):
    envoy = start_envoy(lab_config(upstream.port), **kw)
    envoys.append(envoy)
    return envoy


def test_lab_headers_rewrite_and_body(upstream, envoys):
    envoy = start_lab(upstream, envoys)
    resp = envoy.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=CHAT)
    assert resp.status == 200
    assert resp.header("x-custom-transformed") == "true"
    assert resp.header("x-smart-header") == "method=POST&path=/v1/chat/completions"
    assert resp.header("content-type") == "application/json"
    assert resp.header("server") == "envoy"
    assert resp.header("x-powered-by").startswith("httpbun/")
    completion = resp.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gpt-4"
    assert completion["choices"][0]["message"]["role"] == "assistant"
    assert completion["choices"][0]["message"]["content"].startswith("This is a mock chat response from httpbun.")
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_route_rewrites_the_upstream_path(upstream, envoys):
    envoy = start_lab(upstream, envoys)
    # The rewrite is exact-path: a non-POST shows httpbun's own 405 from /llm/chat/completions.
    resp = envoy.request("GET", "/v1/chat/completions")
    assert resp.status == 405
    assert resp.header("allow") == "POST"
    # Everything else is proxied unchanged; /anything echoes the URL the upstream received.
    resp = envoy.request("GET", "/anything/some/where?x=1")
    assert resp.status == 200
    assert resp.json()["url"].endswith("/anything/some/where?x=1")
    assert resp.header("x-smart-header") == "method=GET&path=/anything/some/where?x=1"


def test_smart_header_on_every_response_including_errors(upstream, envoys):
    envoy = start_lab(upstream, envoys)
    resp = envoy.request("DELETE", "/status/418")
    assert resp.status == 418
    assert resp.header("x-custom-transformed") == "true"
    assert resp.header("x-smart-header") == "method=DELETE&path=/status/418"


def test_smart_header_config_changes_and_adds_headers(upstream, envoys):
    config = json.dumps({
        "response_headers": [
            {"name": "X-Smart-Header", "value": "m=%REQ(:METHOD)% ua=%REQ(user-agent?x-alt):4%"},
            {"name": "X-Jinja", "value": "{{ request_header('x-name') | upper }}"},
        ]
    })
    envoy = start_envoy(gateway_config(upstream.port, [module_filter("my-smart-header", config)],
                                       [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]))
    envoys.append(envoy)
    resp = envoy.request("GET", "/get", headers={"User-Agent": "curl/8.0", "X-Name": "ada"})
    assert resp.status == 200
    assert resp.header("x-custom-transformed") == "true"
    assert resp.header("x-smart-header") == "m=GET ua=curl"
    assert resp.header("x-jinja") == "ADA"


def test_unknown_filter_name_is_refused_at_load(upstream, envoys):
    config = gateway_config(upstream.port, [module_filter("no-such-filter", "{}")],
                            [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}])
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    assert "no-such-filter" in envoy.logs()
    assert "unknown filter name" in envoy.logs()


def test_invalid_json_config_is_refused_at_load(upstream, envoys):
    config = gateway_config(upstream.port, [module_filter("my-smart-header", "{not json")],
                            [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}])
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    logs = envoy.logs()
    assert "my-smart-header" in logs and "rejected its config" in logs


def test_panic_in_filter_answers_500_and_envoy_keeps_serving(upstream, envoys):
    config = gateway_config(
        upstream.port,
        [module_filter("test-panic", json.dumps({"panic_on": "request_headers", "when_header": "x-panic"}))],
        [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}],
    )
    envoy = start_envoy(config, env={"RUST_MODULE_TEST_FILTERS": "1"})
    envoys.append(envoy)
    resp = envoy.request("GET", "/get", headers={"X-Panic": "1"})
    assert resp.status == 500
    assert envoy.alive()
    resp = envoy.request("GET", "/get")
    assert resp.status == 200
    assert "panic" in envoy.logs()


def test_test_filters_are_off_unless_switched_on(upstream, envoys):
    config = gateway_config(upstream.port, [module_filter("test-panic", "{}")],
                            [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}])
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    assert "test-panic" in envoy.logs()
