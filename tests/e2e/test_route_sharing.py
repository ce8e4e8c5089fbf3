"""Routes that carry the same policy share one compiled transformation, and a route update (RDS)
that replaces every route while requests flow loses no request and frees what the old routes
held.

The module logs (at debug level) how many compiled transformations are live each time a config is
created: `compiled transformations: N live`. The configs are interned by their bytes: a policy on
many routes is compiled once; an entry is freed when the last route (or request in flight) holding
it goes away.
"""

import json
import pathlib
import re
import tempfile
import threading

from envoy_harness import per_route
from test_failure_reload import FILTER, ROUTE_CONFIG, live_counts, publish, start_rds_envoy, wait_for

COMPILED = re.compile(r"compiled transformations: (\d+) live")
ROUTES = 60


def policy(version: str, route: int | None = None) -> str:
    """The issue's three-template policy; with a route number, inside the `if` template."""
    mark = "" if route is None else f"-{route}"
    return json.dumps({
        "request": {"set": [
            {"name": "x-route", "value": 'r{{ request_header("x-a") }}'},
            {"name": "x-b", "value": '{% if request_header("x-c") == "1" %}one' + mark + '{% else %}other{% endif %}'},
        ]},
        "response": {"set": [
            {"name": "x-resp", "value": '{{ header(":status") }}-{{ substring(request_header(":path"), 0, 5) }}'},
            {"name": "x-version", "value": version},
        ]},
    })


def routes(version: str, distinct: bool, extra: int = 0) -> dict:
    """`ROUTES` (+ `extra`) routes `/r<i>/` to the upstream's `/anything/`, plus `/delay` (whose
    request the upstream holds), each with a per-route policy: one policy for all, or one each."""
    table = [{"match": {"prefix": "/delay"}, "route": {"cluster": "httpbun", "timeout": "30s"},
              "typed_per_filter_config": {FILTER: per_route("rustformation", policy(version))}}]
    for i in range(ROUTES + extra):
        table.append({
            "match": {"prefix": f"/r{i}/"},
            "route": {"cluster": "httpbun", "prefix_rewrite": "/anything/"},
            "typed_per_filter_config": {FILTER: per_route("rustformation", policy(version, i if distinct else None))},
        })
    return {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": ROUTE_CONFIG,
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": table}]}


def compiled_live(envoy) -> int:
    matches = COMPILED.findall(envoy.logs())
    assert matches, "no compiled transformations line in the log"
    return int(matches[-1])


def live_route_configs(envoy) -> int:
    created, dropped = live_counts(envoy)
    return created - dropped


def test_routes_with_one_policy_share_one_compiled_transformation(upstream, envoys):
    rds_path = pathlib.Path(tempfile.mkdtemp(prefix="rds-")) / "routes.yaml"
    publish(rds_path, routes("v1", distinct=False))
    envoy = start_rds_envoy(upstream, envoys, rds_path)
    assert live_route_configs(envoy) == ROUTES + 1
    # The listener's `{}` and the one policy of every route.
    assert compiled_live(envoy) == 2
    resp = envoy.request("GET", "/r7/x", headers={"x-a": "A", "x-c": "1"})
    assert resp.status == 200
    sent = resp.json()["headers"]
    assert sent["X-Route"] == "rA" and sent["X-B"] == "one"
    assert resp.header("x-resp") == "200-/r7/x" and resp.header("x-version") == "v1"


def test_route_update_replacing_every_route_under_load_loses_nothing_and_frees_the_old(upstream, envoys):
    rds_path = pathlib.Path(tempfile.mkdtemp(prefix="rds-")) / "routes.yaml"
    publish(rds_path, routes("v1", distinct=False))
    envoy = start_rds_envoy(upstream, envoys, rds_path)
    assert compiled_live(envoy) == 2

    # Clients on every route, all the time, while the update lands; and one request the upstream
    # holds for 2 s, started before the update and finishing after it.
    stop = threading.Event()
    results: list[tuple[int, int, str | None, str | None]] = []
    errors: list[BaseException] = []

    def client(offset: int):
        i = offset
        while not stop.is_set():
            try:
                resp = envoy.request("GET", f"/r{i % ROUTES}/x", headers={"x-c": "1"})
                results.append((i % ROUTES, resp.status, resp.header("x-version"),
                                resp.json()["headers"].get("X-B")))
            except BaseException as e:  # noqa: BLE001 - every failure is a finding here
                errors.append(e)
            i += 1

    slow = {}
    slow_thread = threading.Thread(target=lambda: slow.update(resp=envoy.request("GET", "/delay/2", timeout=20)))
    clients = [threading.Thread(target=client, args=(k * 17,)) for k in range(3)]
    for t in clients:
        t.start()
    slow_thread.start()
    assert wait_for(lambda: len(results) > 50)

    # Every route replaced: new bytes (version and, per route, its number), so nothing is shared
    # with the old table.
    publish(rds_path, routes("v2", distinct=True))
    assert wait_for(lambda: any(v == "v2" for _, _, v, _ in results[-5:]), timeout=20), "update not applied"
    seen_v2 = len(results)
    assert wait_for(lambda: len(results) > seen_v2 + 100)
    stop.set()
    for t in clients:
        t.join(20)
    slow_thread.join(20)

    assert not errors, errors[:3]
    assert all(status == 200 for _, status, _, _ in results), [r for r in results if r[1] != 200][:5]
    # Each response was transformed wholly by one version or the other.
    for route, _, version, b in results:
        assert (version, b) in (("v1", "one"), ("v2", f"one-{route}")), (route, version, b)
    assert slow["resp"].status == 200 and slow["resp"].header("x-version") == "v1"

    # The old route configs are gone, and with them the compiled v1 policy: the next config
    # created (one route more, its own bytes) sees the listener's, the v2 table's (one per route,
    # one for /delay) and its own, and nothing of v1.
    assert wait_for(lambda: live_route_configs(envoy) == ROUTES + 1), live_counts(envoy)
    publish(rds_path, routes("v2", distinct=True, extra=1))
    assert wait_for(lambda: envoy.request("GET", f"/r{ROUTES}/x").header("x-version") == "v2")
    assert compiled_live(envoy) == 1 + (ROUTES + 1) + 1
    assert wait_for(lambda: live_route_configs(envoy) == ROUTES + 2), live_counts(envoy)
    assert envoy.alive()
