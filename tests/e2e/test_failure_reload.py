"""Hot reload: a route configuration update (RDS from a file, replaced by an atomic rename)
swaps the per-route transformation for new requests, lets a request in flight finish with the
old one, and frees the old config once nothing uses it. A bad update is refused and the
previous routes keep serving.
"""

import json
import os
import pathlib
import re
import tempfile
import threading
import time

import yaml

from envoy_harness import gateway_config, module_filter, per_route, start_envoy

FILTER = "dynamic_modules/simple_mutations"
ROUTE_CONFIG = "reloadable"
LIVE = re.compile(r"per-route config (created|dropped): (\d+) created, (\d+) dropped, (\d+) live")


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
    in_flight = {}

    def slow():
        in_flight["resp"] = envoy.request("GET", "/delay/2", timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)

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
