"""The PUT of an upload, sent straight from the local file by one worker thread: `os.sendfile` over plain HTTP (the
kernel hands the file's page-cache pages to the socket, no copy in this process), large `sendall`s of one reused
buffer over TLS (encryption runs in that thread without the GIL). The trio loop meanwhile serves FUSE, and the
receiver gets the body in large pieces, not in the slices a trio socket sends between two waits.

The request head is h11's and so is the parsing of the answer, the HTTP/1.1 code httpx itself runs on. Failures
come out as httpx's exceptions (ConnectError, WriteTimeout, ReadError, ...) chained to their cause (an OSError,
an ssl error, a `CertificateMismatch`), so that transfer.py maps them as it maps httpx's own. TLS trusts what the
transfer's httpx client would: the same SSL context, and a pinned host's certificate checked by its SHA-256 right
after the handshake, before any HTTP byte is sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import threading
from typing import Callable

import h11
import httpx
import trio

from guestfs_mount.vsphere.faults import TransferError
from guestfs_mount.vsphere.http import kernel_timeouts, transport_error
from guestfs_mount.vsphere.pinning import refusal

BLOCK = 4 << 20  # bytes per sendfile call or TLS write; progress is reported once per block
MAX_ANSWER = 1 << 20  # an answer's body (an error page) beyond this is not read


class _Cut:
    """The connection of a PUT in flight, so that a cancelled upload can cut it under its thread's feet: through a
    duplicate of its descriptor (shutting that down ends the connection for both), since an SSLSocket's state
    belongs to the sending thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._twin: socket.socket | None = None
        self.cancelled = False

    def set(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._twin is not None:
                self._twin.close()
            self._twin = socket.socket(fileno=os.dup(sock.fileno())) if sock is not None else None
            if self.cancelled:
                self._shutdown()

    def cut(self) -> None:
        with self._lock:
            self.cancelled = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._twin is not None:
            with contextlib.suppress(OSError):  # not connected yet, or already gone
                self._twin.shutdown(socket.SHUT_RDWR)


async def put(url: str, fd: int, size: int, headers: list[tuple[str, str]], *, ssl_context: ssl.SSLContext | None,
              sni: str | None, pin: str | None, connect_timeout: float, timeout: float,
              progress: Callable[[int], None] | None, what: str) -> int:
    """PUT `size` bytes of the open file `fd` (from offset 0; the caller closes it) to `url` with that exact
    Content-Length; returns the answer's status. `progress(sent)` runs in the trio loop, once per block.
    Cancelling cuts the connection and waits for the thread to notice."""
    token = trio.lowlevel.current_trio_token()

    def report(sent: int) -> None:
        if progress is not None:
            with contextlib.suppress(trio.RunFinishedError):  # fire and forget: the sender never waits for the loop
                token.run_sync_soon(progress, sent)

    cut = _Cut()
    sender = _Sender(url, fd, size, headers, ssl_context, sni, pin, connect_timeout, timeout, report, cut, what)
    done = False

    async def cut_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not done:
                cut.cut()

    outcome: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_when_cancelled)
        try:
            # not abandoned on cancel: the thread ends (its socket cut) before the caller moves on and the file closes
            outcome.append(await trio.to_thread.run_sync(sender.run))
        except Exception as e:  # raised below, out of the nursery: not wrapped in an exception group
            outcome.append(e)
        finally:
            done = True
            nursery.cancel_scope.cancel()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


class _Sender:
    def __init__(self, url, fd, size, headers, ssl_context, sni, pin, connect_timeout, timeout, report, cut, what):
        self.url = httpx.URL(url)
        self.fd, self.size, self.headers = fd, size, headers
        self.ssl_context, self.sni, self.pin = ssl_context, sni, pin
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self.report, self.cut, self.what = report, cut, what
        self.h11 = h11.Connection(h11.CLIENT)

    def run(self) -> int:
        sock = self._connect()
        try:
            try:
                sock.sendall(self._head())
                self._send_body(sock)
            except TransferError:
                raise
            except OSError as e:
                # the host may have answered before it hung up (a spent URL, a wrong length): that answer is the
                # error to give, not the broken pipe it left behind
                status = self._answer(sock, quiet=True)
                if status is not None:
                    return status
                raise transport_error(e, httpx.WriteTimeout, httpx.WriteError) from e
            return self._answer(sock)
        finally:
            self.cut.set(None)
            sock.close()

    # ---- connection
    def _connect(self) -> socket.socket:
        host, port = self.url.host, self.url.port or (443 if self.url.scheme == "https" else 80)
        sock = self._tcp(host, port)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a blocking socket with the kernel's own timeouts: one sendfile or TLS write per block, where a Python
            # timeout would make the socket non-blocking and poll before every slice the send buffer takes
            sock.settimeout(None)
            if self.ssl_context is not None:
                kernel_timeouts(sock, self.connect_timeout)
                sock = self._handshake(sock, host, port)
            kernel_timeouts(sock, self.timeout)
        except BaseException:
            self.cut.set(None)  # before the descriptor is closed (and its number maybe reused)
            sock.close()
            raise
        return sock

    def _tcp(self, host: str, port: int) -> socket.socket:
        """A connected socket to the first address of `host` that answers (socket.create_connection's loop),
        each one known to `cut` while it connects: a cancel does not wait for the connect timeout."""
        error: OSError = OSError(f"no address for {host}")
        try:
            addresses = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as e:
            raise transport_error(e, httpx.ConnectTimeout, httpx.ConnectError) from e
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            self.cut.set(sock)
            try:
                if self.cut.cancelled:
                    raise OSError(errno.ECANCELED, "upload cancelled")
                sock.settimeout(self.connect_timeout)
                sock.connect(address)
                return sock
            except OSError as e:
                self.cut.set(None)
                sock.close()
                error = e
        raise transport_error(error, httpx.ConnectTimeout, httpx.ConnectError) from error

    def _handshake(self, sock: socket.socket, host: str, port: int) -> ssl.SSLSocket:
        try:
            tls = self.ssl_context.wrap_socket(sock, server_hostname=self.sni or host)
        except OSError as e:
            raise transport_error(e, httpx.ConnectTimeout, httpx.ConnectError) from e
        if self.pin is not None:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            refused = refusal(tls.getpeercert(binary_form=True), self.pin, address)
            if refused is not None:
                self.cut.set(None)
                tls.close()
                raise httpx.ConnectError(str(refused)) from refused
        return tls

    # ---- request
    def _head(self) -> bytes:
        authority = self.url.netloc.decode("ascii")
        request = h11.Request(method="PUT", target=self.url.raw_path,
                              headers=[("Host", authority), *self.headers, ("Content-Length", str(self.size))])
        return self.h11.send(request)

    def _send_body(self, sock: socket.socket) -> None:
        sent = 0
        copy = isinstance(sock, ssl.SSLSocket)  # TLS: encrypted here, so read and written
        buf = None
        while sent < self.size:
            if self.cut.cancelled:
                raise OSError(errno.ECANCELED, "upload cancelled")
            want = min(BLOCK, self.size - sent)
            if not copy:
                try:
                    n = os.sendfile(sock.fileno(), self.fd, sent, want)  # 0 at the file's end
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or sent:
                        raise
                    copy = True  # a source sendfile cannot read
                    continue
            else:
                if buf is None:
                    buf = memoryview(bytearray(min(BLOCK, self.size)))
                n = os.preadv(self.fd, [buf[:want]], sent)
                if n:
                    sock.sendall(buf[:n])
            if not n:
                raise TransferError(f"upload of {self.what}: the local file has {sent} bytes, not {self.size}",
                                    errno=errno.EIO)
            sent += n
            self.report(sent)

    # ---- answer
    def _answer(self, sock: socket.socket, quiet: bool = False) -> int | None:
        """The answer's status, its body read (up to MAX_ANSWER) and dropped. `quiet`: None instead of raising
        when no whole answer head comes (after a failed send)."""
        status = None
        got = 0
        try:
            if quiet:
                kernel_timeouts(sock, min(self.timeout, 5.0))
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    self.h11.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    got += len(event.data)
                    if got > MAX_ANSWER:
                        return status
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    if status is None:
                        raise h11.RemoteProtocolError("connection closed before an answer")
                    return status
        except (OSError, h11.RemoteProtocolError) as e:
            if status is not None:
                return status  # the head came: a body cut short does not change the verdict
            if quiet:
                return None
            if isinstance(e, h11.RemoteProtocolError):
                raise httpx.RemoteProtocolError(f"{e}") from e
            raise transport_error(e, httpx.ReadTimeout, httpx.ReadError) from e
