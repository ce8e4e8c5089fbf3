"""A panic in our code never takes Envoy down: every callback kind, against the real Envoy.

The `test-panic` filter (only enabled with RUST_MODULE_TEST_FILTERS=1) panics at one chosen
point, and only on requests carrying `x-panic`, so the next request shows Envoy still serves.
"""

import http.client
import json
import time

import pytest

from envoy_harness import gateway_config, module_filter, per_route, start_envoy

PANICS = "dynamicmodulescustom.rust_module_panics"
TEST_ENV = {"RUST_MODULE_TEST_FILTERS": "1"}
ROUTES = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]


def panic_filter(point: str) -> dict:
    return module_filter("test-panic", json.dumps({"panic_on": point, "when_header": "x-panic"}))


def start_panic_envoy(upstream, envoys, point: str):
    envoy = start_envoy(gateway_config(upstream.port, [panic_filter(point)], ROUTES), env=TEST_ENV)
    envoys.append(envoy)
    return envoy


def assert_served_after(envoy):
    """Envoy is alive and the next (unprovoked) request is answered normally by the upstream."""
    assert envoy.alive()
    resp = envoy.request("POST", "/post", body=b"after")
    assert resp.status == 200, resp
    assert resp.json()["data"] == "after"
    assert envoy.alive()


# Request-path hooks and the response-headers hook run before anything reached the client:
# the stream is failed closed with a 500 local reply.
@pytest.mark.parametrize("point", ["request_headers", "request_body", "response_headers"])
def test_panic_before_the_response_started_answers_500(upstream, envoys, point):
    envoy = start_panic_envoy(upstream, envoys, point)
    assert envoy.stats().get(PANICS, 0) == 0
    resp = envoy.request("POST", "/post", headers={"X-Panic": "1"}, body=b"payload")
    assert resp.status == 500
    # Upstream content never leaks into the error answer.
    assert b"payload" not in resp.body
    assert envoy.stats()[PANICS] == 1
    logs = envoy.logs()
    assert "filter 'test-panic' panicked in" in logs
    assert "test-panic: provoked panic in" in logs
    assert_served_after(envoy)
    # Each panic is counted once, and unprovoked requests are not counted.
    resp = envoy.request("POST", "/post", headers={"X-Panic": "1"}, body=b"again")
    assert resp.status == 500
    assert envoy.stats()[PANICS] == 2


def test_panic_in_response_body_resets_the_stream(upstream, envoys):
    # The response headers already went to the client; a 500 is no longer possible, so the
    # stream is reset: the client gets a truncated response, never a wrong complete one.
    envoy = start_panic_envoy(upstream, envoys, "response_body")
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        conn.request("GET", "/anything/panic-body", headers={"X-Panic": "1"})
        resp = conn.getresponse()
        assert resp.status == 200
        expected = int(resp.getheader("content-length"))
        with pytest.raises(http.client.IncompleteRead) as truncated:
            resp.read()
        assert len(truncated.value.partial) < expected
    finally:
        conn.close()
    assert envoy.stats()[PANICS] == 1
    assert "panicked in" in envoy.logs()
    assert_served_after(envoy)


def test_panic_in_stream_complete_leaves_the_response_intact(upstream, envoys):
    # stream_complete runs after the response was sent: nothing to fail, only count and log.
    envoy = start_panic_envoy(upstream, envoys, "stream_complete")
    resp = envoy.request("POST", "/post", headers={"X-Panic": "1"}, body=b"whole")
    assert resp.status == 200
    assert resp.json()["data"] == "whole"
    # The hook runs after the last byte went out; give the worker a moment to count it.
    for _ in range(50):
        if envoy.stats().get(PANICS, 0) == 1:
            break
        time.sleep(0.05)
    assert envoy.stats()[PANICS] == 1
    assert_served_after(envoy)


def test_panic_while_loading_the_config_rejects_it(upstream, envoys):
    envoy = start_envoy(gateway_config(upstream.port, [panic_filter("config")], ROUTES), env=TEST_ENV,
                        expect_failure=True)
    assert envoy.proc.returncode != 0
    # A clean rejection, not a crash: Envoy exits through its config-error path.
    assert envoy.proc.returncode > 0, "Envoy died from a signal"
    logs = envoy.logs()
    assert "filter 'test-panic' panicked while loading its config" in logs
    assert "config rejected" in logs


def test_panic_while_loading_a_per_route_config_rejects_it(upstream, envoys):
    routes = [{
        "match": {"prefix": "/"},
        "route": {"cluster": "httpbun"},
        "typed_per_filter_config": {
            "test-panic": per_route("test-panic", json.dumps({"panic_on": "per_route_config"})),
        },
    }]
    config = gateway_config(upstream.port, [panic_filter("request_headers")], routes)
    envoy = start_envoy(config, env=TEST_ENV, expect_failure=True)
    assert envoy.proc.returncode > 0, "Envoy died from a signal"
    logs = envoy.logs()
    assert "per-route config 'test-panic' panicked while loading" in logs
    assert "config rejected" in logs
