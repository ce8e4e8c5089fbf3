"""kgateway v2.3's `http-acl` filter, end to end in the real Envoy (shared/docs/kgateway-contract.md).

The listener carries the filter disabled with `{"defaultAction":"allow"}`; each route's
DynamicModuleFilterPerRoute (`per_route_config_name: http-acl`, JSON in a StringValue) replaces it.
One Envoy serves three listeners with the same routes: IPv4 loopback (`use_remote_address: true`,
so XFF is ignored), IPv6 loopback `[::1]`, and one that takes the client from X-Forwarded-For
(`use_remote_address: false`, `xff_num_trusted_hops: 1`). A fourth, on a unix socket, has no IP
client address at all.
"""

from __future__ import annotations

import copy
import http.client
import os
import socket
import tempfile

import pytest

from envoy_harness import (
    HCM,
    Response,
    envoy_minor,
    free_port,
    gateway_config,
    module_filter,
    per_route,
    start_envoy,
)

FILTER = "dynamic_modules/http_acl"
ACL = "http-acl"
# Envoy files a dynamic module's custom stats under this prefix.
BLOCKED_STAT = "dynamicmodulescustom.dev.kgateway.http.acl.blocked"
DETAILS = "dynamic_module" if envoy_minor() == 36 else "http-acl:_denied_by_policy"

# The policies, as kgateway writes them.
ALLOW_ALL = '{"defaultAction":"allow"}'
DENY_LOOPBACK = ('{"defaultAction":"allow","rules":[{"name":"loopback","cidrs":["127.0.0.0/8","::1"],"action":"deny"}],'
                 '"denyResponse":{"statusCode":451,"headers":[{"name":"x-b","value":"2"},{"name":"x-a","value":"1"},'
                 '{"name":"x-c","value":"3"}],"blockedByHeaderName":"x-blocked-by"}}')
DENY_DEFAULT = '{"defaultAction":"deny","denyResponse":{"blockedByHeaderName":"x-blocked-by"}}'
DENY_UNNAMED = '{"defaultAction":"allow","rules":[{"cidrs":["127.0.0.1","::1/128"],"action":"deny"}]}'
# Longest prefix wins whatever the order; the same CIDR twice: the last one wins.
LONGEST = ('{"defaultAction":"deny","rules":['
           '{"name":"host","cidrs":["127.0.0.1/32","::1/128"],"action":"allow"},'
           '{"name":"net","cidrs":["127.0.0.0/8","::/0"],"action":"deny"},'
           '{"name":"dup-first","cidrs":["192.0.2.0/24"],"action":"deny"},'
           '{"name":"dup-last","cidrs":["192.0.2.0/24"],"action":"allow"}],'
           '"denyResponse":{"blockedByHeaderName":"x-blocked-by"}}')
LONGEST_REVERSED = ('{"defaultAction":"deny","rules":['
                    '{"name":"net","cidrs":["127.0.0.0/8","::/0"],"action":"deny"},'
                    '{"name":"host","cidrs":["127.0.0.1/32","::1/128"],"action":"allow"}],'
                    '"denyResponse":{"blockedByHeaderName":"x-blocked-by"}}')
# IPv4 and IPv6 kept apart: a v6 rule never matches a v4 client and the reverse.
V4_ONLY_DENY = ('{"defaultAction":"allow","rules":[{"name":"v4","cidrs":["0.0.0.0/0"],"action":"deny"}],'
                '"denyResponse":{"blockedByHeaderName":"x-blocked-by"}}')
V6_ONLY_DENY = ('{"defaultAction":"allow","rules":[{"name":"v6","cidrs":["::/0"],"action":"deny"}],'
                '"denyResponse":{"blockedByHeaderName":"x-blocked-by"}}')
XFF = ('{"defaultAction":"allow","rules":[{"name":"xff-net","cidrs":["198.51.100.0/24"],"action":"deny"},'
       '{"name":"doc-v6","cidrs":["2001:db8::/32"],"action":"deny"}],'
       '"denyResponse":{"statusCode":403,"blockedByHeaderName":"x-blocked-by"}}')

ROUTES = {
    "/allow": ALLOW_ALL,
    "/deny-loopback": DENY_LOOPBACK,
    "/deny-default": DENY_DEFAULT,
    "/deny-unnamed": DENY_UNNAMED,
    "/longest": LONGEST,
    "/longest-reversed": LONGEST_REVERSED,
    "/v4-only": V4_ONLY_DENY,
    "/v6-only": V6_ONLY_DENY,
    "/xff": XFF,
    "/no-route-config": None,
}


def acl_routes() -> list[dict]:
    out = []
    for prefix, policy in ROUTES.items():
        r = {"match": {"prefix": prefix}, "route": {"cluster": "httpbun", "prefix_rewrite": "/anything"}}
        if policy is not None:
            r["typed_per_filter_config"] = {FILTER: per_route(ACL, policy)}
        out.append(r)
    return out


def acl_config(upstream_port: int, listener_config: str = ALLOW_ALL, disabled: bool = True) -> tuple[dict, dict]:
    config = gateway_config(
        upstream_port,
        [module_filter(ACL, listener_config, http_filter_name=FILTER, disabled=disabled)],
        acl_routes(),
        hcm_extra={"use_remote_address": True},
    )
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["response_headers_to_add"] = [
        {"header": {"key": "x-details", "value": "%RESPONSE_CODE_DETAILS%"}},
        {"header": {"key": "x-md-blocked-by", "value": "%DYNAMIC_METADATA(dev.kgateway.http.acl:blocked-by)%"}},
    ]
    ports = {"v6": free_port_v6(), "xff": free_port()}
    sock_dir = tempfile.mkdtemp(prefix="acl-uds-")
    ports["uds"] = os.path.join(sock_dir, "envoy.sock")

    def extra_listener(name, address, **hcm_changes):
        extra = copy.deepcopy(listener)
        extra["name"] = name
        extra["address"] = address
        extra_hcm = extra["filter_chains"][0]["filters"][0]["typed_config"]
        extra_hcm["stat_prefix"] = name
        extra_hcm.update(hcm_changes)
        return extra

    config["static_resources"]["listeners"] += [
        extra_listener("v6", {"socket_address": {"address": "::1", "port_value": ports["v6"]}}),
        extra_listener("xff", {"socket_address": {"address": "127.0.0.1", "port_value": ports["xff"]}},
                       use_remote_address=False, xff_num_trusted_hops=1),
        extra_listener("uds", {"pipe": {"path": ports["uds"]}}),
    ]
    assert hcm["@type"] == HCM
    return config, ports


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def http_request(conn: http.client.HTTPConnection, method: str, path: str, headers=None) -> Response:
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


@pytest.fixture(scope="module")
def acl(upstream):
    config, ports = acl_config(upstream.port)
    envoy = start_envoy(config)
    envoy.extra.update(ports)
    yield envoy
    envoy.stop()


def v4(envoy, path, headers=None):
    return envoy.request("GET", path, headers=headers)


def v6(envoy, path, headers=None):
    return http_request(http.client.HTTPConnection("::1", envoy.extra["v6"], timeout=10), "GET", path, headers)


def via_xff(envoy, path, xff):
    return http_request(http.client.HTTPConnection("127.0.0.1", envoy.extra["xff"], timeout=10), "GET", path,
                        {"X-Forwarded-For": xff})


def via_unix_socket(envoy, path):
    return http_request(UnixHTTPConnection(envoy.extra["uds"]), "GET", path)


def blocked(envoy) -> int:
    return envoy.stats().get(BLOCKED_STAT, 0)


def assert_denied(resp: Response, status: int, blocked_by: str, header: bool = True):
    assert resp.status == status, (resp.status, resp.body)
    assert resp.body == b""
    assert resp.header("x-details") == DETAILS
    assert resp.header("x-md-blocked-by") == blocked_by
    assert resp.header("x-blocked-by") == (blocked_by if header else None)


def assert_allowed(resp: Response):
    assert resp.status == 200, (resp.status, resp.body)
    assert resp.json()["method"] == "GET"  # reached the upstream
    assert resp.header("x-blocked-by") is None
    assert resp.header("x-md-blocked-by") in (None, "", "-")


def test_allow_reaches_upstream_without_side_effects(acl):
    before = blocked(acl)
    assert_allowed(v4(acl, "/allow"))
    assert_allowed(v6(acl, "/allow"))
    assert blocked(acl) == before


def test_deny_with_custom_status_headers_in_order_then_blocked_by(acl):
    before = blocked(acl)
    resp = v4(acl, "/deny-loopback")
    assert_denied(resp, 451, "loopback")
    ours = [(k.lower(), v) for k, v in resp.headers if k.lower() in ("x-a", "x-b", "x-c", "x-blocked-by")]
    assert ours == [("x-b", "2"), ("x-a", "1"), ("x-c", "3"), ("x-blocked-by", "loopback")]
    assert blocked(acl) == before + 1


def test_counter_name_in_stats(acl):
    v4(acl, "/deny-default")
    stats = acl.stats()
    assert stats.get(BLOCKED_STAT, 0) >= 1, sorted(k for k in stats if "acl" in k)


def test_deny_by_default_action_and_default_status(acl):
    assert_denied(v4(acl, "/deny-default"), 403, "default")
    assert_denied(v6(acl, "/deny-default"), 403, "default")


def test_unnamed_rule_without_blocked_by_header(acl):
    assert_denied(v4(acl, "/deny-unnamed"), 403, "rule", header=False)
    assert_denied(v6(acl, "/deny-unnamed"), 403, "rule", header=False)


@pytest.mark.parametrize("path", ["/longest", "/longest-reversed"])
def test_longest_prefix_wins_whatever_the_order(acl, path):
    assert_allowed(v4(acl, path))  # 127.0.0.1/32 allow beats 127.0.0.0/8 deny
    assert_allowed(v6(acl, path))  # ::1/128 allow beats ::/0 deny


def test_ipv6_client_on_ipv6_listener(acl):
    assert_denied(v6(acl, "/deny-loopback"), 451, "loopback")
    # Families are kept apart: ::/0 never matches an IPv4 client, 0.0.0.0/0 never an IPv6 one.
    assert_allowed(v4(acl, "/v6-only"))
    assert_denied(v6(acl, "/v6-only"), 403, "v6")
    assert_allowed(v6(acl, "/v4-only"))
    assert_denied(v4(acl, "/v4-only"), 403, "v4")


def test_ipv4_listener_ignores_xff_when_using_the_remote_address(acl):
    assert_allowed(v4(acl, "/xff", headers={"X-Forwarded-For": "198.51.100.7"}))


def test_client_from_xff_with_trusted_hops(acl):
    # One trusted hop: the client is the second address from the right.
    assert_denied(via_xff(acl, "/xff", "198.51.100.7, 10.0.0.1"), 403, "xff-net")
    assert_allowed(via_xff(acl, "/xff", "192.0.2.1, 198.51.100.7"))
    assert_denied(via_xff(acl, "/xff", "2001:db8::5, 10.0.0.1"), 403, "doc-v6")
    # Same-CIDR duplicates: the last rule wins (allow) over the first (deny).
    assert_allowed(via_xff(acl, "/longest", "192.0.2.44, 10.0.0.1"))
    # No rule matches 203.0.113.9: LONGEST's default action is deny.
    assert_denied(via_xff(acl, "/longest", "203.0.113.9, 10.0.0.1"), 403, "default")


def test_ipv4_mapped_ipv6_client_is_matched_as_ipv4(acl):
    assert_denied(via_xff(acl, "/xff", "::ffff:198.51.100.7, 10.0.0.1"), 403, "xff-net")
    assert_denied(via_xff(acl, "/v4-only", "::ffff:192.0.2.1, 10.0.0.1"), 403, "v4")
    assert_allowed(via_xff(acl, "/v6-only", "::ffff:192.0.2.1, 10.0.0.1"))


def test_client_without_an_ip_is_denied_as_unknown_ip(acl):
    assert_denied(via_unix_socket(acl, "/deny-default"), 403, "unknown-ip")
    # Even where the default action is allow: an address we cannot read is never trusted.
    resp = via_unix_socket(acl, "/allow")
    assert resp.status == 403
    assert resp.header("x-md-blocked-by") == "unknown-ip"


def test_route_without_per_route_config_runs_no_acl(acl):
    before = blocked(acl)
    assert_allowed(v4(acl, "/no-route-config"))
    assert_allowed(via_unix_socket(acl, "/no-route-config"))  # the disabled filter did not run
    assert blocked(acl) == before


def test_enabled_listener_config_applies_where_no_route_config_replaces_it(upstream, envoys):
    config, ports = acl_config(upstream.port, listener_config=DENY_DEFAULT, disabled=False)
    envoy = start_envoy(config)
    envoys.append(envoy)
    assert_denied(v4(envoy, "/no-route-config"), 403, "default")
    assert_allowed(v4(envoy, "/allow"))  # the route's config replaces the listener's


@pytest.mark.parametrize("policy,needle", [
    ('{"defaultAction":"deny","rules":[{"cidrs":["10.0.0.1/8"],"action":"allow"}]}', "host bits"),
    ('{"defaultAction":"deny","rules":[{"cidrs":["10.0.0.0/33"],"action":"allow"}]}', "10.0.0.0/33"),
    ('{"defaultAction":"deny","rules":[{"cidrs":["not-an-ip"],"action":"allow"}]}', "not-an-ip"),
    ('{"defaultAction":"deny",', "line 1"),
    ('{"defaultAction":"maybe"}', "defaultAction"),
])
def test_invalid_per_route_config_stops_envoy_with_a_clear_log_line(upstream, policy, needle):
    config = gateway_config(
        upstream.port,
        [module_filter(ACL, ALLOW_ALL, http_filter_name=FILTER, disabled=True)],
        [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"},
          "typed_per_filter_config": {FILTER: per_route(ACL, policy)}}],
    )
    envoy = start_envoy(config, expect_failure=True)
    assert envoy.proc.returncode != 0
    logs = envoy.logs()
    assert "per-route config 'http-acl' rejected its config" in logs, logs[-3000:]
    assert needle in logs, logs[-3000:]
