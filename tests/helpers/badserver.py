"""A tiny HTTP server that answers badly on purpose: HTML, truncated JSON, wrong types, a Content-Length lie,
or no answer at all. For testing that the client turns nonsense into clear errors."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    content_length: int | None = None  # announce this instead of len(body) (a lie)
    hang: float = 0.0  # sleep this long before answering
    headers: tuple[tuple[str, str], ...] = ()


class BadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers: dict[str, Answer], default: Answer):
        self.answers = answers
        self.default = default
        self.requests: list[tuple[str, str, dict[str, str], int]] = []  # method, path, headers, body bytes read
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                     len(body)))
        path = self.path.split("?")[0]
        answer = next((a for prefix, a in self.server.answers.items() if path.startswith(prefix)), self.server.default)
        if answer.hang:
            time.sleep(answer.hang)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(answer.content_length if answer.content_length is not None
                                               else len(answer.body)))
        for key, value in answer.headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)
        self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@contextlib.contextmanager
def bad_server(answers: dict[str, Answer] | None = None, default: Answer | None = None) -> Iterator[BadServer]:
    server = BadServer(answers or {}, default or Answer(404, b"<html>not here</html>", "text/html"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
