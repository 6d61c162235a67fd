"""HTTP plumbing: a threading HTTP/1.1 server (optionally TLS), routing by path prefix, JSON in and out, one log line per call."""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import control, rest, vijson
from .state import Simulator
from .transfers import Aborted, receive_file, send_file

log = logging.getLogger("guestfs_mount.sim")


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "guestfs-sim"
    timeout = 300  # an idle keep-alive connection holds a thread; drop it eventually
    # headers and body go out in separate writes: with Nagle on, each answer waits for the client's delayed ACK
    # (~40 ms per API call)
    disable_nagle_algorithm = True
    sim: Simulator  # set on the subclass the server makes

    # ---- request context, filled in by the dialects for the log line; one request at a time per connection

    def handle_one_request(self):
        self._reset_context()
        super().handle_one_request()

    def _reset_context(self):
        self.op = ""
        self.vm_name = ""
        self.guest_path = ""
        self.status = 0

    def send_response(self, code, message=None):
        self.status = code
        super().send_response(code, message)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # replaced by log_call: the default line would print query strings, i.e. transfer tokens

    def log_call(self, note: str = "") -> None:
        parts = [self.command, urlsplit(self.path).path]
        if self.op:
            parts.append(f"op={self.op}")
        if self.vm_name:
            parts.append(f"vm={self.vm_name}")
        if self.guest_path:
            parts.append(f"path={self.guest_path!r}")
        parts.append(f"-> {self.status}")
        if note:
            parts.append(note)
        log.info(" ".join(parts))

    # ---- I/O helpers for the dialects

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest("chunked request bodies are not supported")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self):
        raw = self.read_body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise BadRequest(f"malformed JSON: {err}") from None

    def send_json(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    # ---- routing

    def _dispatch(self):
        path = urlsplit(self.path).path
        note = ""
        try:
            if path.startswith("/sdk/vim25/"):
                vijson.handle(self, self.sim)
            elif path == "/api" or path.startswith("/api/"):
                rest.handle(self, self.sim)
            elif path == "/guestFile":
                note = self._guest_file()
            elif path.startswith("/_sim/"):
                control.handle(self, self.sim)
            else:
                self.send_json(404, {"error": f"no such endpoint: {path}"})
        except BadRequest as err:
            # answered in the dialect of the endpoint, so that clients parse it like any other error
            self.close_connection = True
            if path.startswith("/sdk/"):
                body = {"_typeName": "InvalidRequest", "faultMessage": [{"_typeName": "LocalizableMessage", "key": "sim.badRequest", "arg": [], "message": str(err)}]}
                self.send_json(500, body)
            elif path.startswith("/api"):
                msg = {"id": "com.vmware.sim.invalid_request", "default_message": str(err), "args": []}
                self.send_json(400, {"error_type": "INVALID_REQUEST", "messages": [msg]})
            else:
                self.send_json(400, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError) as err:
            self.close_connection = True
            note = f"connection lost: {err.__class__.__name__}"
        except Exception as err:  # a bug in the simulator must show as a 500, not a hung client
            log.exception("internal error")
            self.close_connection = True
            note = f"internal error: {err!r}"
            try:
                self.send_json(500, {"_typeName": "SystemError", "reason": repr(err)})
            except OSError:
                pass
        finally:
            self.sim.end_call()  # a serial guest's next operation may start
        self.log_call(note)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    # ---- /guestFile

    def _guest_file(self) -> str:
        """GET or PUT a file by a URL from an Initiate call; returns a note for the log line."""
        query = parse_qs(urlsplit(self.path).query)
        direction = {"GET": "get", "PUT": "put"}.get(self.command)
        if direction is None:
            self.close_connection = True
            self.send_empty(405, {"Allow": "GET, PUT", "Connection": "close"})
            return ""
        self.op = f"guestFile.{self.command}"
        t = self.sim.transfers.claim(
            query.get("id", [""])[0], query.get("token", [""])[0], direction, self.connection
        )
        if isinstance(t, str):
            self.sim.count(self.op)
            self.close_connection = True
            self.send_empty(404 if t == "gone" else 409, {"Connection": "close"})
            return f"url {t}"
        self.vm_name, self.guest_path = t.vm, t.guest_path
        ok = False
        try:
            self.sim.count(self.op)
            if direction == "get":
                self.sim.transfer_delay()  # before the first byte
            fault = self.sim.faults.take(self.op, t.vm)
            ok = self._get(t, fault) if direction == "get" else self._put(t, fault)
        except (Aborted, OSError) as err:
            self.close_connection = True
            return f"aborted: {err}"
        finally:
            self.sim.transfers.release(t, ok, self.connection)
        return ""

    def _throttle(self, t):
        vm = self.sim.inventory.by_name(t.vm)
        return (lambda: vm.throttle_bps) if vm is not None else (lambda: 0)

    def _get(self, t, fault) -> bool:
        try:
            size = os.stat(t.host_path).st_size
        except OSError:
            self.close_connection = True
            self.send_empty(404, {"Connection": "close"})
            return False
        if fault and size == 0:
            # nothing to cut midway: fail outright instead
            self.close_connection = True
            self.send_json(500, {"error": f"transfer failed: {fault}"}, {"Connection": "close"})
            return False
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if fault:
            self.close_connection = True
        send_file(t, self.wfile, bool(fault), self._throttle(t))
        return True

    def _put(self, t, fault) -> bool:
        self.close_connection = True  # a rejected body stays unread: never reuse this connection
        length = self.headers.get("Content-Length")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or length is None:
            self.send_empty(411, {"Connection": "close"})
            return False
        if not length.isdigit() or int(length) != t.size:
            self.send_json(
                500,
                {"error": f"Content-Length {length} differs from the size declared at initiate ({t.size})"},
                {"Connection": "close"},
            )
            return False
        try:
            receive_file(t, self.rfile, t.size, bool(fault), self._throttle(t))
        except Aborted as err:
            if "planned" in str(err):
                self.send_json(500, {"error": f"transfer failed: {fault}"}, {"Connection": "close"})
            raise
        except OSError as err:
            self.send_json(500, {"error": f"cannot write {t.guest_path}: {err.strerror}"}, {"Connection": "close"})
            return False
        self.sim.transfer_delay()  # before the answer
        self.close_connection = False
        self.send_empty(200)
        return True


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sim: Simulator, ssl_context: ssl.SSLContext | None):
        self.ssl_context = ssl_context
        handler = type("BoundHandler", (Handler,), {"sim": sim})
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a slow client cannot stall accept().
        if self.ssl_context is not None:
            request.settimeout(30)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                request.close()
                return
            request.settimeout(None)
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()

    def handle_error(self, request, client_address):
        log.debug("connection error from %s", client_address, exc_info=True)


def make_server(host: str, port: int, sim: Simulator, ssl_context: ssl.SSLContext | None) -> SimServer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    SimServer.address_family = family
    server = SimServer((host, port), sim, ssl_context)
    sim.port = server.server_address[1]
    return server
