"""The example filter of docs/writing-a-filter.md, `request-size-limit`, in the real Envoy.

It ships in the same librust_module.so as the other filters; this file keeps the guide honest.
"""

import http.client

from envoy_harness import Response, gateway_config, module_filter, start_envoy

LIMIT = 16


def size_limit_envoy(upstream, envoys, config: str = f'{{"max_bytes": {LIMIT}}}'):
    filters = [module_filter("request-size-limit", config)]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes))
    envoys.append(envoy)
    return envoy


def chunked_post(port: int, path: str, chunks: list[bytes]) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for chunk in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def rejected(envoy) -> int:
    return envoy.stats().get("dynamicmodulescustom.request_size_limit.rejected", 0)


def test_bodies_within_the_limit_reach_the_upstream(upstream, envoys):
    envoy = size_limit_envoy(upstream, envoys)
    resp = envoy.request("POST", "/anything", body=b"x" * LIMIT)
    assert resp.status == 200
    assert resp.json()["data"] == "x" * LIMIT
    assert envoy.request("GET", "/anything").status == 200
    resp = chunked_post(envoy.port, "/anything", [b"12345678", b"12345678"])
    assert resp.status == 200
    assert resp.json()["data"] == "1234567812345678"
    assert rejected(envoy) == 0


def test_a_body_over_the_limit_is_answered_413(upstream, envoys):
    envoy = size_limit_envoy(upstream, envoys)
    resp = envoy.request("POST", "/anything", body=b"x" * (LIMIT + 1))
    assert resp.status == 413
    assert resp.body == f"request body larger than {LIMIT} bytes\n".encode()
    assert resp.header("content-type") == "text/plain"
    # Without a content-length, the body is measured as it arrives.
    resp = chunked_post(envoy.port, "/anything", [b"12345678", b"12345678", b"9"])
    assert resp.status == 413
    assert rejected(envoy) == 2
    # The next request on a fresh connection is served normally.
    assert envoy.request("POST", "/anything", body=b"ok").status == 200


def test_a_bad_config_is_refused_by_envoy(upstream, envoys):
    filters = [module_filter("request-size-limit", '{"max_bytes": "lots"}')]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}}]
    envoy = start_envoy(gateway_config(upstream.port, filters, routes), expect_failure=True)
    envoys.append(envoy)
    assert envoy.proc.returncode != 0
    assert 'request-size-limit: expected {"max_bytes": <number>}' in envoy.logs()
