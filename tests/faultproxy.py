"""An HTTP proxy on 127.0.0.1 in front of the real S3 server that injects faults on request.

Faults are queued and consumed in order by requests that match: an S3 error response (503
SlowDown, 500 InternalError), a dropped connection (socket closed with no response), or a
response whose body is corrupted (one byte flipped). Requests pass through unchanged otherwise,
Host header included, so the server still verifies the client's signatures.

``cut_after`` runs a function (kill the server, say) right after the server has answered a matching
request, and gives the client no answer: the fault lands at a known point of a transfer, and
``forwarded`` (every request the server answered: method, path, body bytes, status) says what the
server had received by then. A request the server cannot be reached for is dropped ("upstream down").
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.faults: deque[tuple[str, str, str]] = deque()  # (kind, method or "*", path substring)
        self.seen: list[tuple[str, str, str]] = []  # (method, path, what happened)
        self.forwarded: list[tuple[str, str, int, int]] = []  # (method, path, body bytes, status) answered upstream
        self.cuts: list[tuple[str, str, Callable[[], None]]] = []  # (method, path substring, run at the cut)
        self.cut_at: list[list[tuple[str, str, int, int]]] = []  # ``forwarded`` as it was at each cut
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _take_fault(self) -> str | None:
                with proxy.lock:
                    for i, (kind, method, part) in enumerate(proxy.faults):
                        if method in ("*", self.command) and part in self.path:
                            del proxy.faults[i]
                            return kind
                return None

            def _drop(self) -> None:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = self._take_fault()
                with proxy.lock:
                    proxy.seen.append((self.command, self.path, fault or "pass"))
                if fault == "drop":
                    self._drop()
                    return
                if fault in ERRORS:
                    status, code, msg = ERRORS[fault]
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                           f"<Message>{msg}</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body if body else None)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # the server is down (killed by a cut, say): the client gets no answer
                    with proxy.lock:
                        proxy.seen.append((self.command, self.path, "upstream down"))
                    self._drop()
                    return
                with proxy.lock:
                    proxy.forwarded.append((self.command, self.path, len(body), resp.status))
                    cut = next((c for c in proxy.cuts if c[0] in ("*", self.command) and c[1] in self.path
                                and resp.status < 300), None)
                    if cut is not None:
                        proxy.cuts.remove(cut)
                        proxy.cut_at.append(list(proxy.forwarded))
                if cut is not None:
                    cut[2]()
                    with proxy.lock:
                        proxy.seen.append((self.command, self.path, "cut"))
                    self._drop()
                    return
                if fault == "corrupt" and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def inject(self, kind: str, times: int = 1, method: str = "*", path: str = "") -> None:
        with self.lock:
            self.faults.extend([(kind, method, path)] * times)

    def cut_after(self, method: str, path: str, action: Callable[[], None]) -> None:
        """Once: when the server has answered (2xx) a request matching ``method`` ("*": any) and
        ``path`` (a substring), run ``action`` and close the client's connection unanswered."""
        with self.lock:
            self.cuts.append((method, path, action))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
