"""A recording upstream for the differential suite.

Each request names its case in the `x-case` header (the policies never touch it). The upstream
records exactly what arrived (method, path, header lines in order, body bytes, de-chunked) and
answers with the response the case asked for. One instance serves one Envoy, so what each module
sent upstream is kept apart.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass

CASE_HEADER = "x-case"


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            try:
                received = self._read_request()
            except (OSError, ValueError):
                return
            if received is None:
                return
            case = next((v for k, v in received.headers if k.lower() == CASE_HEADER), None)
            server: RecordingUpstream = self.server.owner
            reply = server.replies.get(case)
            with server.lock:
                server.received.setdefault(case, []).append(received)
            if reply is None:
                reply = Reply(500, [("content-type", "text/plain")], b"no such case\n")
            head = [f"HTTP/1.1 {reply.status} X"]
            head += [f"{k}: {v}" for k, v in reply.headers]
            head.append(f"content-length: {len(reply.body)}")
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + reply.body)
            self.wfile.flush()

    def _read_request(self) -> Received | None:
        line = self.rfile.readline(65536)
        if not line:
            return None
        method, path, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers = []
        while True:
            h = self.rfile.readline(65536)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("utf-8", "replace").rstrip("\r\n").partition(":")
            headers.append((name, value.strip()))
        lower = {k.lower(): v for k, v in headers}
        body = b""
        if lower.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        elif "content-length" in lower:
            body = self.rfile.read(int(lower["content-length"]))
        return Received(method, path, headers, body)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RecordingUpstream:
    def __init__(self):
        self.replies: dict[str, Reply] = {}
        self.received: dict[str, list[Received]] = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, case: str) -> list[Received]:
        with self.lock:
            return self.received.pop(case, [])

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
