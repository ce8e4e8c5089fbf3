"""Load and concurrency soak of the real Envoy with our module (bounded in time).

Envoy runs with `--concurrency 2`; many keep-alive client connections in parallel mix every
filter (my-smart-header on every response, rustformation with JSON and string body
transformations, http-acl allow and deny), WebSocket upgrades through the transformation
filter to a small echo upstream, and large bodies. Every response is checked byte for byte.

Asserts: no 5xx, no unexpected status, every body and header exact, zero caught panics, Envoy
never restarted (same process, uptime covers the run), and Envoy's RSS stable: the mean of
the last quarter of the run within 5% of the first quarter's (after a warm-up).

    python tests/soak/soak.py --seconds 60 [--connections 16]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import pathlib
import random
import socket
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from envoy_harness import Upstream, gateway_config, module_filter, per_route, request, start_envoy  # noqa: E402

TX = "dynamic_modules/simple_mutations"
ACL = "dynamic_modules/http-acl"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PANICS = "dynamicmodulescustom.rust_module_panics"


# --- a WebSocket echo upstream ---------------------------------------------------------------

def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(recv_exact(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(recv_exact(sock, 8), "big")
    mask = recv_exact(sock, 4) if b1 & 0x80 else None
    payload = recv_exact(sock, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WsEcho:
    """Echoes every WebSocket message; answers the upgrade with the x-ws-seen request header."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket):
        with conn:
            try:
                head = read_head(conn).decode("latin-1")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in head.split("\r\n")[1:] if ":" in line)}
                accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\nx-ws-seen: "
                             + headers.get("x-ws-tx", "").encode() + b"\r\n\r\n")
                while True:
                    opcode, payload = read_frame(conn)
                    conn.sendall(frame(opcode, payload, masked=False))
                    if opcode == 8:
                        return
            except (ConnectionError, OSError, KeyError):
                return

    def stop(self):
        self.sock.close()


# --- the Envoy under test ---------------------------------------------------------------------

def routes() -> list[dict]:
    def tx(config: dict) -> dict:
        return {TX: per_route("rustformation", json.dumps(config))}

    def acl(config: dict) -> dict:
        return {ACL: per_route("http-acl", json.dumps(config))}

    return [
        {"match": {"prefix": "/ws"}, "route": {"cluster": "ws", "timeout": "0s"},
         "typed_per_filter_config": tx({"request": {"set": [{"name": "x-ws-tx", "value": "{{ header('x-id') }}"}]},
                                        "response": {"set": [{"name": "x-resp", "value": "ws-%REQ(x-id)%"}]}})},
        {"match": {"prefix": "/anything/json"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": tx({
             "request": {"set": [{"name": "x-req", "value": "{{ request_header('x-id') }}"}],
                         "body": {"parseAs": "AsJson", "value": "{{ name }}-{{ n }}"}},
             "response": {"set": [{"name": "x-resp", "value": "{{ request_header('x-id') | upper }}"}]}})},
        {"match": {"prefix": "/anything/length"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": tx({"request": {"body": {"value": "{{ body() | length }}"}}})},
        {"match": {"prefix": "/anything/deny"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": acl({"defaultAction": "allow",
                                         "rules": [{"name": "loopback", "cidrs": ["127.0.0.0/8"], "action": "deny"}],
                                         "denyResponse": {"statusCode": 403, "blockedByHeaderName": "x-blocked-by"}})},
        {"match": {"prefix": "/anything/allow"}, "route": {"cluster": "httpbun"},
         "typed_per_filter_config": acl({"defaultAction": "deny",
                                         "rules": [{"cidrs": ["127.0.0.1"], "action": "allow"}]})},
        {"match": {"prefix": "/"}, "route": {"cluster": "httpbun"}},
    ]


def envoy_config(upstream_port: int, ws_port: int) -> dict:
    filters = [
        module_filter("my-smart-header", "{}"),
        module_filter("http-acl", '{"defaultAction":"allow"}', http_filter_name=ACL, disabled=True),
        module_filter("rustformation", "{}", http_filter_name=TX, disabled=True),
    ]
    ws_cluster = {
        "name": "ws", "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "ws", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": ws_port}}}}]}]},
    }
    return gateway_config(upstream_port, filters, routes(), clusters=[ws_cluster],
                          hcm_extra={"upgrade_configs": [{"upgrade_type": "websocket"}]})


# --- load ---------------------------------------------------------------------------------------

class Failures:
    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[str] = []
        self.statuses: Counter = Counter()
        self.kinds: Counter = Counter()

    def fail(self, what: str):
        with self.lock:
            if len(self.items) < 20:
                self.items.append(what)
            else:
                self.items[-1] = f"... and more (last: {what})"

    def record(self, kind: str, status: int):
        with self.lock:
            self.kinds[kind] += 1
            self.statuses[status] += 1


def check(failures: Failures, kind: str, cond: bool, detail: str):
    if not cond:
        failures.fail(f"{kind}: {detail}")


def one_request(conn: http.client.HTTPConnection, rng: random.Random, failures: Failures, seq: int):
    kind = rng.choice(["json", "json", "length", "plain", "deny", "allow", "big", "status"])
    rid = f"id{seq}-{rng.randrange(10**9)}"
    headers = {"x-id": rid}
    if kind == "json":
        name = rng.choice(["ada", "grace", "linus", "\u00e9t\u00e9"])
        n = rng.randrange(10**6)
        body = json.dumps({"name": name, "n": n}).encode()
        path = f"/anything/json/{rid}"
        expect_status, expect_data = 200, f"{name}-{n}"
    elif kind == "length":
        size = rng.randrange(0, 200_000)
        body = os.urandom(size // 2).hex().encode()[:size]
        path = "/anything/length"
        expect_status, expect_data = 200, str(len(body))
    elif kind in ("plain", "big"):
        size = rng.randrange(0, 2000) if kind == "plain" else rng.randrange(200_000, 600_000)
        body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(min(size, 64))) * (size // 64 + 1)
        body = body[:size]
        path = f"/anything/plain/{rid}"
        expect_status, expect_data = 200, body.decode()
    elif kind == "deny":
        body, path, expect_status, expect_data = None, f"/anything/deny/{rid}", 403, None
    elif kind == "allow":
        body, path, expect_status, expect_data = None, f"/anything/allow/{rid}", 200, ""
    else:
        code = rng.choice([200, 201, 404, 418])
        body, path, expect_status, expect_data = None, f"/status/{code}", code, None
    method = "POST" if body is not None else "GET"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    failures.record(kind, resp.status)
    check(failures, kind, resp.status == expect_status, f"status {resp.status} != {expect_status} for {path}")
    check(failures, kind, resp.getheader("x-smart-header") == f"method={method}&path={path}",
          f"x-smart-header {resp.getheader('x-smart-header')!r}")
    if kind == "json":
        check(failures, kind, resp.getheader("x-resp") == rid.upper(), f"x-resp {resp.getheader('x-resp')!r}")
    if kind == "deny":
        check(failures, kind, resp.getheader("x-blocked-by") == "loopback" and data == b"",
              f"deny reply {resp.getheaders()} {data[:100]!r}")
    if expect_data is not None and resp.status == expect_status:
        echo = json.loads(data)
        check(failures, kind, echo["data"] == expect_data,
              f"body mismatch for {path}: {len(echo['data'])} vs {len(expect_data)} chars")
        if kind == "json":
            check(failures, kind, echo["headers"].get("X-Req") == rid, f"x-req upstream {echo['headers']}")


def http_worker(port: int, stop: threading.Event, failures: Failures, seed: int):
    rng = random.Random(seed)
    seq = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        seq += 1
        try:
            one_request(conn, rng, failures, seq)
        except (OSError, http.client.HTTPException, ValueError) as e:
            failures.fail(f"connection error: {e!r}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def ws_session(port: int, rng: random.Random, failures: Failures, seq: int):
    rid = f"ws{seq}-{rng.randrange(10**9)}"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws/{rid} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nx-id: {rid}\r\n\r\n").encode())
        head = read_head(sock)
        text, _, rest = head.partition(b"\r\n\r\n")
        lines = text.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        failures.record("ws", int(lines[0].split()[1]))
        check(failures, "ws", lines[0].startswith("HTTP/1.1 101"), f"upgrade answered {lines[0]}")
        # The request transformation ran on the upgrade (header seen upstream), and the response one.
        check(failures, "ws", hdrs.get("x-ws-seen") == rid, f"x-ws-seen {hdrs.get('x-ws-seen')!r}")
        check(failures, "ws", hdrs.get("x-resp") == f"ws-{rid}", f"x-resp {hdrs.get('x-resp')!r}")
        if not lines[0].startswith("HTTP/1.1 101"):
            return
        check(failures, "ws", rest == b"", "data after the 101 head")
        for i in range(rng.randrange(5, 30)):
            payload = f"{rid}:{i}:".encode() + os.urandom(rng.randrange(0, 70_000)).hex().encode()
            sock.sendall(frame(1, payload, masked=True))
            opcode, echoed = read_frame(sock)
            check(failures, "ws", (opcode, echoed) == (1, payload), f"echo mismatch on message {i}")
        sock.sendall(frame(8, b"\x03\xe8", masked=True))
        opcode, _ = read_frame(sock)
        check(failures, "ws", opcode == 8, "no close frame back")


def ws_worker(port: int, stop: threading.Event, failures: Failures, seed: int):
    rng = random.Random(seed)
    seq = 0
    while not stop.is_set():
        seq += 1
        try:
            ws_session(port, rng, failures, seq)
        except (OSError, ValueError, IndexError) as e:
            failures.fail(f"ws error: {e!r}")


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ws-connections", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=None, help="seconds before RSS sampling starts")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(15.0, max(5.0, args.seconds * 0.15))

    upstream = Upstream(extra_env={"HTTPBUN_STREAM_DELAY_MS": "0"})
    ws = WsEcho()
    envoy = start_envoy(envoy_config(upstream.port, ws.port), concurrency=2)
    failures = Failures()
    stop = threading.Event()
    threads = [threading.Thread(target=http_worker, args=(envoy.port, stop, failures, i)) for i in range(args.connections)]
    threads += [threading.Thread(target=ws_worker, args=(envoy.port, stop, failures, 1000 + i))
                for i in range(args.ws_connections)]
    pid = envoy.proc.pid
    samples: list[tuple[float, int]] = []
    try:
        start = time.time()
        for t in threads:
            t.start()
        while time.time() - start < warmup + args.seconds:
            time.sleep(0.5)
            if not envoy.alive():
                failures.fail(f"Envoy exited with {envoy.proc.returncode}")
                break
            if time.time() - start >= warmup:
                samples.append((time.time(), rss_kib(pid)))
        stop.set()
        for t in threads:
            t.join(60)
        elapsed = time.time() - start
        alive = envoy.alive()
        stats = envoy.stats() if alive else {}
        server_info = json.loads(request(envoy.admin_port, "GET", "/server_info").body) if alive else {}
    finally:
        stop.set()
        envoy.stop()
        upstream.stop()
        ws.stop()

    total = sum(failures.kinds.values())
    quarter = max(1, len(samples) // 4)
    first = sum(r for _, r in samples[:quarter]) / quarter if samples else 0
    last = sum(r for _, r in samples[-quarter:]) / quarter if samples else 0
    growth = (last - first) / first if first else float("inf")
    print(f"soak: {elapsed:.0f}s (warm-up {warmup:.0f}s), {total} exchanges ({total / elapsed:.0f}/s), "
          f"{args.connections} HTTP + {args.ws_connections} WebSocket connections, Envoy --concurrency 2")
    print(f"soak: by kind {dict(sorted(failures.kinds.items()))}")
    print(f"soak: by status {dict(sorted(failures.statuses.items()))}")
    print(f"soak: Envoy RSS first quarter {first / 1024:.1f} MiB, last quarter {last / 1024:.1f} MiB "
          f"({growth * 100:+.2f}%), {len(samples)} samples")

    problems = list(failures.items)
    if not alive:
        problems.append("Envoy is not running at the end")
    uptime = int(server_info.get("uptime_current_epoch", "0s").rstrip("s") or 0)
    if alive and (server_info.get("state") != "LIVE" or uptime + 2 < elapsed):
        problems.append(f"Envoy restarted or not live: {server_info.get('state')} uptime {uptime}s")
    if stats.get(PANICS, 0):
        problems.append(f"{stats[PANICS]} panics caught")
    five_xx = sum(n for s, n in failures.statuses.items() if s >= 500)
    if five_xx:
        problems.append(f"{five_xx} responses with 5xx")
    if total < 100:
        problems.append(f"only {total} exchanges: the load did not run")
    if failures.kinds.get("ws", 0) == 0:
        problems.append("no WebSocket session ran")
    if len(samples) < 8:
        problems.append("too few RSS samples")
    elif abs(growth) > 0.05:
        problems.append(f"Envoy RSS moved {growth * 100:+.2f}% between the first and last quarter (limit 5%)")
    for p in problems:
        print(f"soak FAILED: {p}")
    print(f"soak: {0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
