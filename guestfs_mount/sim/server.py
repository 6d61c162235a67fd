"""HTTP plumbing: a threading HTTP/1.1 server (optionally TLS), routing by path prefix, JSON in and out, one log line per call.

The vCenter's server answers everything; each simulated ESXi host with an address of its own (`--hosts`) gets a
server on that address and the same port that answers only `/guestFile`, for that host's VMs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import control, rest, soap, vijson
from .faults import SimFault
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
        self.body_note = ""  # how a transfer body went out, for the log line ("gzip")

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
        self.send_body(status, json.dumps(obj).encode(), "application/json", headers)

    def send_body(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection and "Connection" not in (headers or {}):
            # we hang up after this answer (a request we could not read): say so, or a keep-alive client sends its
            # next request into the closing socket and gets a reset
            self.send_header("Connection", "close")
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
        esxi = self.sim.product.esxi  # a standalone ESXi host speaks SOAP only
        try:
            if self.server.esxi_host is not None and path != "/guestFile":
                # an ESXi host's address serves transfers here; vCenter's API is elsewhere
                self.send_json(404, {"error": f"no such endpoint on ESXi host {self.server.esxi_host}: {path}"})
            elif path.startswith("/sdk/vim25/") and not esxi:
                vijson.handle(self, self.sim)
            elif (path == "/api" or path.startswith("/api/")) and not esxi:
                rest.handle(self, self.sim)
            elif path == "/sdk" or path.startswith("/sdk/"):
                soap.handle(self, self.sim)
            elif path == "/guestFile":
                note = self._guest_file()
            elif path.startswith("/_sim/"):
                control.handle(self, self.sim)
            elif path == "/certs/download.zip" and self.command == "GET" and self.sim.settings.certs_zip and not esxi:
                self.op = "certs.download"  # vCenter's "Download trusted root CA certificates" (sim/certs.py)
                self.send_body(200, self.sim.settings.certs_zip, "application/zip")
            else:
                self.send_json(404, {"error": f"no such endpoint: {path}"})
        except BadRequest as err:
            # answered in the dialect of the endpoint, so that clients parse it like any other error
            self.close_connection = True
            if path == "/sdk":
                soap.send_fault(self, SimFault("InvalidRequest", str(err)))
            elif path.startswith("/sdk/"):
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
                if path == "/sdk":
                    soap.send_fault(self, SimFault("SystemError", repr(err), reason=repr(err)))
                else:
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
        if self.server.esxi_host is not None:
            vm = self.sim.inventory.by_name(t.vm)
            if vm is None or vm.host != self.server.esxi_host:
                # a host knows only the transfers of its own VMs (a URL from before a migration names the old one)
                self.sim.transfers.release(t, False, self.connection)
                self.sim.count(self.op)
                self.close_connection = True
                self.send_empty(404, {"Connection": "close"})
                return f"VM not on {self.server.esxi_host}"
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
        return self.body_note

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
        gzip_mode = self.sim.settings.transfer_gzip
        if gzip_mode == "always" or (gzip_mode == "accepted" and accepts_gzip(self.headers.get("Accept-Encoding"))):
            return self._get_gzip(t, fault)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if fault:
            self.close_connection = True
        send_file(t, self.wfile, bool(fault), self._throttle(t))
        return True

    def _get_gzip(self, t, fault) -> bool:
        """The body gzip-compressed and chunked, with no Content-Length (--transfer-gzip), as a report of a real
        ESXi GET above ~2.4 KB suggests; the compressed stream is made as the file is read."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if fault:
            self.close_connection = True
        self.body_note = "gzip"
        out = GzipChunks(self.wfile)
        send_file(t, out, bool(fault), self._throttle(t))
        out.finish()
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


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (`identity` alone, or `gzip;q=0`, does not)."""
    for item in (header or "").split(","):
        coding, _, params = item.strip().partition(";")
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            weight = float(q)
        except ValueError:
            weight = 1.0
        if coding.strip().lower() in ("gzip", "x-gzip", "*") and weight > 0:
            return True
    return False


class GzipChunks:
    """A file-like writer that gzips what it gets and writes it as HTTP/1.1 chunks."""

    def __init__(self, wfile):
        self._wfile = wfile
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer

    def _chunk(self, data: bytes) -> None:
        if data:
            self._wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def write(self, data) -> None:
        self._chunk(self._zip.compress(bytes(data)))

    def finish(self) -> None:
        self._chunk(self._zip.flush())
        self._wfile.write(b"0\r\n\r\n")


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: a mount's 32 busy workers (a fresh connection per transfer) overflowed
    # it ("SYN flooding" in the kernel log) and some connections were reset; a real vCenter or ESXi queues more
    request_queue_size = 128

    def __init__(self, address, sim: Simulator, ssl_context: ssl.SSLContext | None, esxi_host: str | None = None):
        self.ssl_context = ssl_context
        self.esxi_host = esxi_host  # the simulated ESXi host this server is (None: vCenter)
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


def make_server(host: str, port: int, sim: Simulator, ssl_context: ssl.SSLContext | None,
                esxi_host: str | None = None) -> SimServer:
    """The vCenter's server (it picks the port: `sim.port`), or with `esxi_host` a host's transfer server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("SimServer", (SimServer,), {"address_family": family})
    server = server_class((host, port), sim, ssl_context, esxi_host)
    if esxi_host is None:
        sim.port = server.server_address[1]
    return server
