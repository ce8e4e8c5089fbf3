"""Hot reload: a route configuration update (RDS from a file, replaced by an atomic rename)
swaps the per-route transformation for new requests, lets a request in flight finish with the
old one, and frees the old config once nothing uses it. A bad update is refused and the
previous routes keep serving. The same for a listener update (LDS) that changes a listener-level
filter config (`my-smart-header`).
"""

import json
import os
import pathlib
import re
import tempfile
import threading
import time

import yaml

from envoy_harness import free_port, gateway_config, module_filter, per_route, request, start_envoy

FILTER = "dynamic_modules/simple_mutations"
ROUTE_CONFIG = "reloadable"
LIVE = re.compile(r"per-route config (created|dropped): (\d+) created, (\d+) dropped, (\d+) live")
FILTER_LIVE = re.compile(r"filter config (?:created|dropped): (\d+) created, (\d+) dropped, (\d+) live")
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
# How long Envoy lets the connections of a replaced listener finish: longer than the request kept
# in flight across the update, short enough for the test.
DRAIN_SECONDS = 4


def route_config(version: str, template: str | None = None) -> dict:
    value = template if template is not None else version
    tx = per_route("rustformation", json.dumps({"response": {"set": [{"name": "x-version", "value": value}]}}))
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [
                {"match": {"prefix": "/delay"}, "route": {"cluster": "httpbun", "timeout": "30s"},
                 "typed_per_filter_config": {FILTER: tx}},
                {"match": {"prefix": "/"}, "route": {"cluster": "httpbun"},
                 "typed_per_filter_config": {FILTER: tx}},
            ],
        }],
    }


def publish(path: pathlib.Path, config: dict):
    """Write next to the target, then rename over it: Envoy sees one complete file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"resources": [config]}, sort_keys=False))
    os.rename(tmp, path)


def start_rds_envoy(upstream, envoys, rds_path: pathlib.Path, env: dict | None = None):
    config = gateway_config(upstream.port, [module_filter("rustformation", "{}", http_filter_name=FILTER,
                                                          disabled=True)], [])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    hcm["rds"] = {"route_config_name": ROUTE_CONFIG,
                  "config_source": {"resource_api_version": "V3", "path_config_source": {"path": str(rds_path)}}}
    config["node"] = {"id": "e2e", "cluster": "e2e"}  # required by file-based xDS
    envoy = start_envoy(config, env=env, extra_args=["--component-log-level", "dynamic_modules:debug"])
    envoys.append(envoy)
    return envoy


def live_counts(envoy) -> tuple[int, int]:
    """(created, dropped) from the module's last per-route config log line."""
    matches = LIVE.findall(envoy.logs())
    assert matches, "no per-route config lifecycle line in the log"
    _, created, dropped, _ = matches[-1]
    return int(created), int(dropped)


def live_filter_configs(envoy) -> int:
    """Filter configs alive, from the module's last filter config lifecycle line."""
    matches = FILTER_LIVE.findall(envoy.logs())
    assert matches, "no filter config lifecycle line in the log"
    return int(matches[-1][2])


def start_slow_request(envoy) -> tuple[threading.Thread, dict]:
    """A request the upstream holds for 2 s, sent and under way when this returns; its response
    lands in the dict under "resp" once the thread is joined."""
    in_flight = {}

    def slow():
        in_flight["resp"] = envoy.request("GET", "/delay/2", timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    return thread, in_flight


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_route_update_swaps_the_transformation_and_frees_the_old_one(upstream, envoys):
    rds_path = pathlib.Path(tempfile.mkdtemp(prefix="rds-")) / "routes.yaml"
    publish(rds_path, route_config("v1"))
    envoy = start_rds_envoy(upstream, envoys, rds_path)
    assert envoy.request("GET", "/get").header("x-version") == "v1"
    # Both routes share one filter config value, but Envoy builds one per-route config each.
    created_v1, dropped_v1 = live_counts(envoy)
    assert created_v1 - dropped_v1 == 2

    # A request in flight on v1: the upstream holds it for 2 s.
    thread, in_flight = start_slow_request(envoy)

    publish(rds_path, route_config("v2"))
    assert wait_for(lambda: envoy.request("GET", "/get").header("x-version") == "v2"), "update not applied"
    assert envoy.stats()[f"http.e2e.rds.{ROUTE_CONFIG}.update_success"] >= 2
    # The old route table is still referenced by the request in flight: not freed yet.
    created, dropped = live_counts(envoy)
    assert created == created_v1 + 2
    assert dropped == dropped_v1, "v1 configs freed while a request still used them"

    thread.join(20)
    resp = in_flight["resp"]
    assert resp.status == 200 and resp.body == b"OK"
    # The request that started before the update finished with the config it started with.
    assert resp.header("x-version") == "v1"

    # Once it finished, the two v1 configs are dropped: nothing is leaked.
    assert wait_for(lambda: live_counts(envoy)[1] == dropped_v1 + 2), f"v1 configs not freed: {live_counts(envoy)}"
    created, dropped = live_counts(envoy)
    assert created - dropped == 2

    # Many updates in a row: the number of live configs stays at what the current table holds.
    for i in range(3, 13):
        publish(rds_path, route_config(f"v{i}"))
        assert wait_for(lambda i=i: envoy.request("GET", "/get").header("x-version") == f"v{i}")
    assert wait_for(lambda: (lambda c: c[0] - c[1] == 2)(live_counts(envoy))), live_counts(envoy)
    assert envoy.alive()


def test_bad_route_update_is_refused_and_the_old_routes_keep_serving(upstream, envoys):
    rds_path = pathlib.Path(tempfile.mkdtemp(prefix="rds-")) / "routes.yaml"
    publish(rds_path, route_config("good"))
    envoy = start_rds_envoy(upstream, envoys, rds_path)
    assert envoy.request("GET", "/get").header("x-version") == "good"
    rejected = f"http.e2e.rds.{ROUTE_CONFIG}.update_rejected"
    before = envoy.stats().get(rejected, 0)

    publish(rds_path, route_config("bad", template="{{ unclosed"))
    assert wait_for(lambda: envoy.stats().get(rejected, 0) == before + 1), "bad update not rejected"
    assert "per-route config 'rustformation' rejected its config: invalid template" in envoy.logs()
    resp = envoy.request("GET", "/get")
    assert resp.status == 200
    assert resp.header("x-version") == "good"
    # The half-built configs of the refused update are not leaked either.
    assert wait_for(lambda: (lambda c: c[0] - c[1] == 2)(live_counts(envoy))), live_counts(envoy)
    assert envoy.alive()


def test_route_update_whose_config_panics_is_refused_and_envoy_keeps_serving(upstream, envoys):
    """A config-time panic in a live Envoy: the update is refused, nothing else happens."""
    rds_path = pathlib.Path(tempfile.mkdtemp(prefix="rds-")) / "routes.yaml"
    publish(rds_path, route_config("good"))
    envoy = start_rds_envoy(upstream, envoys, rds_path, env={"RUST_MODULE_TEST_FILTERS": "1"})
    rejected = f"http.e2e.rds.{ROUTE_CONFIG}.update_rejected"
    before = envoy.stats().get(rejected, 0)

    bad = route_config("panics")
    bad["virtual_hosts"][0]["routes"][1]["typed_per_filter_config"]["test-panic"] = per_route(
        "test-panic", json.dumps({"panic_on": "per_route_config"}))
    publish(rds_path, bad)
    assert wait_for(lambda: envoy.stats().get(rejected, 0) == before + 1), "panicking update not rejected"
    assert "per-route config 'test-panic' panicked while loading" in envoy.logs()
    assert envoy.alive()
    resp = envoy.request("GET", "/get")
    assert resp.status == 200
    assert resp.header("x-version") == "good"


# --- LDS: a listener-level filter config replaced ------------------------------------------------

def smart_header_listener(upstream_port: int, port: int, version: str, config: str | None = None) -> dict:
    if config is None:
        config = json.dumps({"response_headers": [{"name": "x-version", "value": version}]})
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun", "timeout": "30s"}}]
    listener = gateway_config(upstream_port, [module_filter("my-smart-header", config)], routes)[
        "static_resources"]["listeners"][0]
    listener["@type"] = LISTENER
    listener["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    return listener


def start_lds_envoy(upstream, envoys, lds_path: pathlib.Path):
    config = gateway_config(upstream.port, [], [])
    del config["static_resources"]["listeners"]
    config["dynamic_resources"] = {
        "lds_config": {"resource_api_version": "V3", "path_config_source": {"path": str(lds_path)}}}
    config["node"] = {"id": "e2e", "cluster": "e2e"}
    port = int(yaml.safe_load(lds_path.read_text())["resources"][0]["address"]["socket_address"]["port_value"])
    envoy = start_envoy(config, listener_port=port, extra_args=[
        "--component-log-level", "dynamic_modules:debug", "--drain-time-s", str(DRAIN_SECONDS)])
    envoys.append(envoy)
    return envoy


def new_connection_version(envoy) -> str | None:
    """x-version on a request over a fresh connection (a replaced listener keeps its old ones)."""
    return request(envoy.port, "GET", "/get").header("x-version")


def lds_envoy_serving(upstream, envoys, version: str):
    """An Envoy whose one listener (from an LDS file) runs `my-smart-header` setting x-version."""
    lds_path = pathlib.Path(tempfile.mkdtemp(prefix="lds-")) / "listeners.yaml"
    port = free_port()
    publish(lds_path, smart_header_listener(upstream.port, port, version))
    envoy = start_lds_envoy(upstream, envoys, lds_path)
    assert new_connection_version(envoy) == version
    return envoy, lds_path, port


def test_listener_update_swaps_the_filter_config_and_frees_the_old_one(upstream, envoys):
    envoy, lds_path, port = lds_envoy_serving(upstream, envoys, "v1")
    live_v1 = live_filter_configs(envoy)
    assert live_v1 >= 1

    # A request in flight on the v1 listener: the upstream holds it for 2 s.
    thread, in_flight = start_slow_request(envoy)

    publish(lds_path, smart_header_listener(upstream.port, port, "v2"))
    assert wait_for(lambda: new_connection_version(envoy) == "v2"), "listener update not applied"
    assert envoy.stats()["listener_manager.lds.update_success"] >= 2
    # The v1 config is still held by the draining listener and the request in flight.
    assert live_filter_configs(envoy) > live_v1

    thread.join(20)
    resp = in_flight["resp"]
    assert resp.status == 200 and resp.body == b"OK"
    # The request that started before the update finished with the filter config it started with.
    assert resp.header("x-version") == "v1"
    assert resp.header("x-custom-transformed") == "true"

    # Once the old listener has drained, its filter config is dropped: nothing is leaked.
    assert wait_for(lambda: live_filter_configs(envoy) == live_v1, timeout=DRAIN_SECONDS + 10), \
        f"old filter config not freed: {live_filter_configs(envoy)} live, expected {live_v1}"
    assert new_connection_version(envoy) == "v2"
    assert envoy.alive()


def test_bad_listener_update_is_refused_and_the_old_listener_keeps_serving(upstream, envoys):
    envoy, lds_path, port = lds_envoy_serving(upstream, envoys, "good")
    live = live_filter_configs(envoy)
    rejected = "listener_manager.lds.update_rejected"
    before = envoy.stats().get(rejected, 0)

    publish(lds_path, smart_header_listener(upstream.port, port, "bad", config='{"response_headers": 5}'))
    assert wait_for(lambda: envoy.stats().get(rejected, 0) == before + 1), "bad listener update not rejected"
    assert re.search(r"rust_module: filter 'my-smart-header' rejected its config: .*response_headers", envoy.logs())
    resp = request(envoy.port, "GET", "/get")
    assert resp.status == 200
    assert resp.header("x-version") == "good"
    # The refused update built nothing that lives on.
    assert live_filter_configs(envoy) == live
    assert envoy.alive()
