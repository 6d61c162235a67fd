"""An HTTP proxy in front of the simulator that passes every request on, except those it was told to lie about:
those get a planned `badserver.Answer` (HTML, truncated JSON, wrong types, a Content-Length lie) instead.

For a mount, the proxy must also be on the transfer path. Transfer URLs name the simulator's port and the host
the client called (`*`), so run the simulator on 127.0.0.1:P, the proxy on 127.0.0.2:P and give the mount
`http://127.0.0.2:P` (every loopback address is local on Linux). With `tls=` (a server SSLContext) the proxy
speaks HTTPS with its own certificate and reaches an HTTPS simulator with `upstream_ca`.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

from tests.helpers.badserver import Answer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}


@dataclass
class Lie:
    method: str | None  # None: any method
    path_part: str  # told when this string is in the request's path (with its query)
    answer: Answer
    times: int | None  # None: until cleared
    told: int = 0
    body_part: bytes | None = None  # and this is in the request's body (SOAP: every call is POST /sdk)


class LyingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listen: tuple[str, int], upstream: str, tls: ssl.SSLContext | None = None,
                 upstream_ca: str | None = None):
        self.upstream = urlsplit(upstream)
        self.upstream_context = ssl.create_default_context(cafile=upstream_ca) if upstream_ca else None
        self.lies: list[Lie] = []
        self.lock = threading.Lock()
        self.forwarded: list[tuple[str, str]] = []  # (method, path) of every request passed on
        super().__init__(listen, _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def lie(self, path_part: str, answer: Answer, times: int | None = None, method: str | None = None,
            body_part: bytes | None = None) -> None:
        with self.lock:
            self.lies.append(Lie(method, path_part, answer, times, body_part=body_part))

    def truth(self) -> None:
        """Stop every lie."""
        with self.lock:
            self.lies.clear()

    def told(self) -> int:
        with self.lock:
            return sum(lie.told for lie in self.lies)

    def _lie_for(self, method: str, path: str, body: bytes) -> Answer | None:
        with self.lock:
            for lie in self.lies:
                if lie.path_part in path and (lie.method is None or lie.method == method) and \
                        (lie.body_part is None or lie.body_part in body) and \
                        (lie.times is None or lie.told < lie.times):
                    lie.told += 1
                    return lie.answer
        return None

    def _upstream(self) -> http.client.HTTPConnection:
        host, port = self.upstream.hostname, self.upstream.port
        if self.upstream.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=60, context=self.upstream_context)
        return http.client.HTTPConnection(host, port, timeout=60)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LyingProxy

    def log_message(self, *args):  # quiet
        pass

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server._lie_for(self.command, self.path, body)
        if answer is not None:
            self._tell(answer)
            return
        self.server.forwarded.append((self.command, self.path))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        headers["Connection"] = "close"
        conn = self.server._upstream()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := response.read(64 * 1024):
                self.wfile.write(chunk)
            self.wfile.flush()
        except OSError:
            pass  # the client or the simulator went away: so does this connection
        finally:
            conn.close()
            self.close_connection = True

    def _tell(self, answer: Answer):
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(answer.content_length if answer.content_length is not None
                                               else len(answer.body)))
        for key, value in answer.headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(answer.body)
            self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@contextlib.contextmanager
def lying_proxy(upstream: str, host: str = "127.0.0.2", port: int | None = None, tls: ssl.SSLContext | None = None,
                upstream_ca: str | None = None) -> Iterator[LyingProxy]:
    """A proxy on host:port (port: the upstream's, so transfer URLs reach the proxy too) until the block ends."""
    port = urlsplit(upstream).port if port is None else port
    proxy = LyingProxy((host, port), upstream, tls, upstream_ca)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)
