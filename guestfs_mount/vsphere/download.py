"""One transfer GET on a worker thread, its body read straight into the caller's buffers.

The body of a download is most of the bytes this program moves. Through httpx it is read on the event loop and
copied by h11 (socket -> bytes -> h11's buffer -> a chunk); here a thread of its own connects, does TLS (the same
verification or pin as the API connection / `hosts.Route`), writes the request and parses the response head with
h11 (the HTTP/1.1 parser httpx uses), then `recv_into`s the body into buffers the `Sink` hands out: one copy, made
by the kernel, with the GIL released, so the FUSE loop and the download use two cores.

A fetch is one attempt at one URL. It raises httpx's exceptions for transport failures (ConnectError,
ConnectTimeout, ReadError, ReadTimeout, RemoteProtocolError, DecodingError: `phase` says whether the request was
sent) and our own for what the answer says (TransferError: status, encoding; ProtocolError: a length that is not the
file's), so the caller (transfer.py) maps them, and renews the URL, exactly as it does for its httpx GETs.
"""

from __future__ import annotations

import socket
import ssl
import threading
import zlib
from typing import Callable
from urllib.parse import urlsplit

import h11
import httpx

from guestfs_mount.vsphere.faults import ProtocolError, TransferError
from guestfs_mount.vsphere.guestfiles import Sink, Stopped, put
from guestfs_mount.vsphere.http import kernel_timeouts, transport_error
from guestfs_mount.vsphere.pinning import refusal

HEAD_READ = 64 << 10  # reads until the response head is parsed
RAW_READ = 1 << 20  # socket reads of a TLS connection
DECODED_ENCODINGS = ("gzip", "deflate")  # what is decoded (here by zlib, in chunks() by httpx); others are refused


class Fetch:
    """One GET of `url` into `sink`, skipping the first `skip` bytes of the body (a renewed URL starts at 0).
    `size` is the file's size when known: the length the head announces must match it. `run` on a thread; `stop`
    from anywhere ends it soon (its socket is shut down)."""

    def __init__(self, url: str, sni: str | None, context: ssl.SSLContext | None, pin: str | None,
                 timeout: float | None, connect_timeout: float | None, headers: list[tuple[str, str]],
                 size: int | None, skip: int, sink: Sink, what: str,
                 on_size: Callable[[int], None] | None = None):
        self.url, self.sni, self.context, self.pin = url, sni, context, pin
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.headers, self.size, self.skip, self.sink, self.what = headers, size, skip, sink, what
        self.on_size = on_size  # told the size a head announces, before the body's first byte
        self.phase = "connect"  # "connect" until the request is sent, then "response"
        self.status: int | None = None
        self.got = 0  # bytes of the body given to the sink (after `skip`)
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLObject | None = None
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # ------------------------------------------------------------------------------------------- thread side
    def run(self) -> None:
        try:
            self._connect()
            try:
                self._exchange()
            finally:
                self._sock.close()
        except OSError as e:
            if self._stopped:
                raise Stopped() from None
            connecting = self.phase == "connect"
            raise transport_error(e, httpx.ConnectTimeout if connecting else httpx.ReadTimeout,
                                  httpx.ConnectError if connecting else httpx.ReadError) from e

    def _connect(self) -> None:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        with self._lock:
            self._sock = sock
            if self._stopped:
                sock.close()
                raise Stopped()
        try:
            if parts.scheme == "https":
                self._tls = self.context.wrap_bio(self._incoming, self._outgoing, server_hostname=self.sni or host)
                self._raw = bytearray(RAW_READ)
                self._handshake()
                if self.pin is not None:
                    refused = refusal(self._tls.getpeercert(binary_form=True), self.pin, f"{host}:{port}")
                    if refused is not None:
                        raise httpx.ConnectError(str(refused)) from refused
            # blocking, with the kernel's timeouts: a Python timeout would poll before each recv (one more syscall
            # per MiB, and an EAGAIN whenever the socket is empty)
            sock.settimeout(None)
            if self.timeout is not None:
                kernel_timeouts(sock, self.timeout)
        except BaseException:
            sock.close()
            raise

    # TLS through memory BIOs: the socket is read a MiB at a time and OpenSSL decrypts from memory (an SSLSocket
    # reads each 16 KiB record with two syscalls of its own); decryption, like the socket, runs without the GIL
    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionResetError("the host closed the connection during the TLS handshake") from None
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._sock.sendall(self._outgoing.read())

    def _fill(self) -> bool:
        """More encrypted bytes from the socket into OpenSSL's; False at the end of the stream."""
        n = self._sock.recv_into(self._raw)
        if not n:
            self._incoming.write_eof()
            return False
        self._incoming.write(memoryview(self._raw)[:n])
        return True

    def _send(self, data: bytes) -> None:
        if self._tls is None:
            self._sock.sendall(data)
            return
        self._tls.write(data)
        self._flush()

    def _recv_into(self, view, n: int) -> int:
        """Up to `n` bytes into `view`: what the next socket read brings (0: the end of the stream)."""
        if self._tls is None:
            return self._sock.recv_into(view, n)
        got = 0
        while got < n:
            try:
                m = self._tls.read(n - got, view[got:])
            except ssl.SSLWantReadError:
                if got:
                    break  # all of this socket read is decrypted: hand it over rather than wait for more
                if not self._fill():
                    break
                continue
            except ssl.SSLZeroReturnError:  # close_notify
                break
            if not m:
                break
            got += m
        self._flush()  # whatever OpenSSL has to say back (a key update)
        return got

    def _recv(self, n: int) -> bytes:
        buffer = bytearray(n)
        return bytes(buffer[:self._recv_into(memoryview(buffer), n)])

    def _exchange(self) -> None:
        parts = urlsplit(self.url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = h11.Connection(h11.CLIENT)
        request = conn.send(h11.Request(method="GET", target=target, headers=[("Host", parts.netloc), *self.headers]))
        request += conn.send(h11.EndOfMessage())
        self._send(request)
        self.phase = "response"
        try:
            response = self._head(conn)
        except h11.RemoteProtocolError as e:
            raise httpx.RemoteProtocolError(str(e)) from e
        self.status = response.status_code
        if response.status_code != 200:
            return  # the caller says what the status means
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        length = headers.get("content-length")
        announced = int(length) if length is not None and length.isdigit() else None
        if encoding not in ("", "identity", *DECODED_ENCODINGS):
            raise TransferError(f"download of {self.what}: the host sent it with Content-Encoding {encoding!r}, "
                                f"which this client cannot decode (it asks for identity)")
        plain = encoding in ("", "identity")
        if plain and announced is not None:
            if self.size is None:
                self.size = announced
                if self.on_size is not None:
                    self.on_size(announced)
            elif announced != self.size:
                raise ProtocolError(f"download of {self.what}: {announced} bytes announced, the file has {self.size}")
        if plain and announced is not None and "transfer-encoding" not in headers:
            self._body_direct(conn, announced)
        else:
            self._body_framed(conn, encoding)

    def _head(self, conn: h11.Connection) -> h11.Response:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv(HEAD_READ))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            # an InformationalResponse (100 Continue): the real one follows

    def _deliver(self, data) -> None:
        """Body bytes read some other way than straight into the sink: the skipped ones dropped, the rest copied."""
        if self.skip:
            drop = min(self.skip, len(data))
            self.skip -= drop
            data = memoryview(data)[drop:]
        if len(data):
            self.got += len(data)
            put(self.sink, data)

    def _body_direct(self, conn: h11.Connection, length: int) -> None:
        """An identity body of a known length: what h11 already read, then the socket straight into the sink."""
        leftover = conn.trailing_data[0][:length]
        left = length - len(leftover)
        self._deliver(leftover)
        scratch = None
        while left:
            if self.skip:
                scratch = scratch or bytearray(min(self.skip, 1 << 20))
                n = self._recv_into(memoryview(scratch), min(len(scratch), self.skip, left))
                self.skip -= n
            else:
                space = self.sink.buffer()
                want = min(len(space), left)
                n = self._recv_into(space, want)
                if n:
                    self.got += n
                    self.sink.filled(n)
            if not n:
                return  # cut short: the caller sees fewer bytes than the size
            left -= n

    def _body_framed(self, conn: h11.Connection, encoding: str) -> None:
        """A compressed, chunked or close-delimited body: h11 frames it, zlib decodes it."""
        decoder = _decoder(encoding)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                raise httpx.RemoteProtocolError(str(e)) from e
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv(1 << 20))
            elif isinstance(event, h11.Data):
                self._deliver(decoder(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self._deliver(decoder(None))
                return


def _decoder(encoding: str):
    """bytes -> decoded bytes (None: the end, what is left); zlib errors as httpx.DecodingError."""
    if encoding in ("", "identity"):
        return lambda data: data or b""
    # gzip: a gzip header; deflate: zlib-wrapped or, as some servers send it, raw
    state = {"z": zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS), "first": True}

    def decode(data: bytes | None) -> bytes:
        try:
            if data is None:
                return state["z"].flush()
            if state["first"] and encoding == "deflate":
                state["first"] = False
                try:
                    return state["z"].decompress(data)
                except zlib.error:
                    state["z"] = zlib.decompressobj(-zlib.MAX_WBITS)
            return state["z"].decompress(data)
        except zlib.error as e:
            raise httpx.DecodingError(str(e)) from e

    return decode
