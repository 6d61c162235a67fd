"""Transfer URLs (`https://<esxi or *>/guestFile?id=..&token=..`): streamed GET and exact-length PUT.

A URL is used once: a GET that fails (before its first byte or cut midway), or a PUT that fails, asks the caller
for a new URL (a new initiate) once, never re-sends to the spent one; a GET renewed midway skips the bytes already
delivered (transfer URLs have no Range). Each transfer uses a fresh connection (`Connection: close`, as govmomi
does: ESXi does not like kept-alive transfer sockets). Where each goes and what it trusts is a `hosts.Route`: a
pinned route accepts exactly the certificate vCenter reports for the host (its SHA-256, pinning.py: checked right
after the TLS handshake and before any HTTP byte is sent; dates are not checked), any other is verified like the API
connection. GETs ask for `Accept-Encoding: identity`; a gzip or deflate body that comes anyway is decoded, any
other encoding refused. A GET is read either by `chunks()` (httpx, on the event loop: prefetch, `check`, and any
transfer through a proxy) or by `into(sink)` (download.py, on a thread of its own: the spool's downloads), with
the same checks, renewal and errors. A PUT's body goes from the local file to the socket in one worker thread
(upload.py: sendfile, or large TLS writes), with the TLS context and pin the route's httpx client would use;
through httpx only when the environment names a proxy for the URL, or for a source with no file descriptor.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import urllib.request
from typing import AsyncIterator, Awaitable, Callable

import httpcore
import httpx
import trio

from guestfs_mount.vsphere import upload
from guestfs_mount.vsphere.download import DECODED_ENCODINGS, Fetch
from guestfs_mount.vsphere.faults import ConnectionFailed, ProtocolError, TransferError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig, ReadTransfer, Sink, Stopped
from guestfs_mount.vsphere.hosts import Route
from guestfs_mount.vsphere.http import USER_AGENT, connection_error, root_cause, timeouts, tls_verify
from guestfs_mount.vsphere.model import GuestFileInfo
from guestfs_mount.vsphere.pinning import CertificateMismatch, PinnedTransport, pinned_context

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes read from a local file per PUT chunk through httpx (each read is a hop to a worker thread)

# httpcore reads a socket 64 KiB at a time and its cost per read, in Python, capped a streamed GET near 270 MiB/s
# on the benchmark machine; 1 MiB reads gave 1.2 GiB/s (docs/performance.md). A class attribute: it applies to
# every HTTP/1.1 connection of the process, which are all ours.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1 << 20
NewRoute = Callable[[], Awaitable[Route]]
LIMITS = httpx.Limits(max_keepalive_connections=0)
DOWNLOAD_THREADS = 256  # downloads at once on threads of their own (as many as the FUSE loop runs handlers)
HEADERS = {"User-Agent": USER_AGENT, "Connection": "close", "Accept-Encoding": "identity"}


def _proxied(url: str) -> bool:
    """Whether the environment sends this URL through a proxy (httpx's clients honour HTTPS_PROXY and the like;
    download.py and upload.py do not speak it, so such a transfer goes through httpx)."""
    proxies = urllib.request.getproxies()
    parts = httpx.URL(url)
    return bool(proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(parts.host)


def _descriptor(source) -> int | None:
    """The file descriptor behind a file object, or None (an in-memory file has none)."""
    try:
        return source.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


def _describe(url: str) -> str:
    """A transfer URL fit for a log line or an error: no token."""
    parts = httpx.URL(url)
    return str(parts.copy_with(query=b"token=***"))


class TransferClients:
    """httpx clients for transfers: one per pinned fingerprint, one verifying like the API connection; no
    kept-alive connections. `on_refused(host_id)` hears of a refused certificate."""

    def __init__(self, config: ClientConfig, on_refused: Callable[[str | None], None] | None = None):
        self._config = config
        self._default_verify = tls_verify(config) if not config.insecure else False
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._contexts: dict[str | None, ssl.SSLContext] = {}
        self.timeout = timeouts(config)
        self._threads: trio.CapacityLimiter | None = None
        self._on_refused = on_refused
        self.get(None)  # made now: loading the CA store takes tens of ms, which the first read would wait for

    def get(self, pin: str | None) -> httpx.AsyncClient:
        key = None if self._config.insecure else pin
        if key not in self._clients:
            kwargs = {"transport": PinnedTransport(key, LIMITS)} if key else {"verify": self._default_verify, "limits": LIMITS}
            self._clients[key] = httpx.AsyncClient(
                timeout=self.timeout,
                headers=HEADERS,
                **kwargs,
            )
        return self._clients[key]

    def threads(self) -> trio.CapacityLimiter:
        """Threads for downloads (download.py), apart from trio's default 40: every running download holds one for
        its whole length, and a stalled one must not keep another from starting."""
        if self._threads is None:
            self._threads = trio.CapacityLimiter(DOWNLOAD_THREADS)
        return self._threads

    def ssl_context(self, pin: str | None) -> ssl.SSLContext:
        """The TLS settings of `get(pin)`'s client, for a transfer made without httpx (download.py, upload.py)."""
        key = None if self._config.insecure else pin
        if key not in self._contexts:
            self._contexts[key] = pinned_context() if key else httpx.create_ssl_context(verify=self._default_verify)
        return self._contexts[key]

    async def put(self, route: Route, source, size: int, progress, what: str) -> int:
        """PUT `size` bytes of `source` (a path, or a binary file with a descriptor) with that Content-Length;
        the answer's status. Transport failures raise httpx's exceptions (see `failure`)."""
        headers = [("User-Agent", USER_AGENT), ("Connection", "close"), ("Content-Type", "application/octet-stream")]
        own = isinstance(source, (str, os.PathLike))
        if _proxied(route.url) or not (own or _descriptor(source) is not None):
            # through a proxy, or from memory (`check --write` sends a BytesIO): httpx, reading in a worker thread
            client, request = self.request(route, "PUT", content=_file_chunks(source, size, progress, what),
                                           headers={"Content-Length": str(size),
                                                    "Content-Type": "application/octet-stream"})
            response = await client.send(request)
            return response.status_code
        tls = self.ssl_context(route.pin) if httpx.URL(route.url).scheme == "https" else None
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC) if own else os.dup(_descriptor(source))
        try:
            return await upload.put(route.url, fd, size, headers, ssl_context=tls, sni=route.sni,
                                    pin=None if self._config.insecure else route.pin,
                                    connect_timeout=self._config.connect_timeout, timeout=self._config.timeout,
                                    progress=progress, what=what)
        finally:
            os.close(fd)

    def request(self, route: Route, method: str, **kwargs) -> tuple[httpx.AsyncClient, httpx.Request]:
        client = self.get(route.pin)
        extensions = {"sni_hostname": route.sni} if route.sni else {}
        return client, client.build_request(method, route.url, extensions=extensions, **kwargs)

    def failure(self, e: httpx.HTTPError, what: str, route: Route) -> ConnectionFailed:
        """A transport failure of a transfer, naming the ESXi host and the address used."""
        root = root_cause(e)
        if isinstance(root, CertificateMismatch):
            if self._on_refused is not None:
                self._on_refused(route.host_id)
            return ConnectionFailed(f"{what}: ESXi host {route.host}: {root}")
        error = connection_error(e, f"{what}: ESXi host {route.host} at {route.address}")
        if isinstance(root, socket.gaierror):
            error = ConnectionFailed(f"{error}; the name does not resolve from here: transfer_host = "
                                     f"\"management-ip\" (the default) goes to the host's management address",
                                     errno=error.errno)
        return error

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


# ------------------------------------------------------------------------------------------- GET
class HttpReadTransfer(ReadTransfer):
    """A download: `route` from the initiate call, `new_route()` for one more try when the GET fails."""

    def __init__(self, clients: TransferClients, route: Route, new_route: NewRoute, size: int | None,
                 info: GuestFileInfo | None, what: str):
        self._clients = clients
        self._route = route
        self._new_route = new_route
        self.size = size
        self.info = info
        self._what = what
        self._response: httpx.Response | None = None
        self._used = False
        self._renewed = False  # one new URL per download, whether the GET failed at once or midway

    async def _renew(self, error: VSphereError) -> None:
        if self._renewed:
            raise error
        self._renewed = True
        log.info("%s; asking for a new transfer URL", error)
        self._route = await self._new_route()

    async def _open(self) -> httpx.Response:
        while True:
            client, request = self._clients.request(self._route, "GET")
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as e:
                error: VSphereError = self._clients.failure(e, f"download of {self._what}", self._route)
            else:
                if response.status_code == 200:
                    return response
                await response.aclose()
                error = TransferError(f"download of {self._what}: HTTP {response.status_code} from "
                                      f"{_describe(self._route.url)}")
            await self._renew(error)

    def _body(self, response: httpx.Response) -> tuple[AsyncIterator[bytes], int | None]:
        """The body's bytes as they arrive, decoded when the host compressed them anyway, and the length the
        headers announce for the decoded file (None when compressed: Content-Length then counts gzip bytes)."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            length = response.headers.get("content-length")
            return response.aiter_raw(), int(length) if length is not None and length.isdigit() else None
        if encoding in DECODED_ENCODINGS:
            return response.aiter_bytes(), None
        raise TransferError(f"download of {self._what}: the host sent it with Content-Encoding {encoding!r}, which "
                            f"this client cannot decode (it asks for identity)")

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._used:
            raise TransferError(f"download of {self._what}: a transfer is read once")
        self._used = True
        got = 0  # bytes given to the caller
        while True:
            response = self._response = await self._open()
            try:
                body, announced = self._body(response)
                if self.size is None:
                    self.size = announced
                elif announced is not None and announced != self.size:
                    raise ProtocolError(f"download of {self._what}: {announced} bytes announced, the file has "
                                        f"{self.size}")
                # a URL that died midway (an ESXi hiccup, a cut connection) is renewed: the new GET starts at 0
                skip = got
                async for chunk in body:  # as they arrive: the first bytes do not wait for a MiB
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    got += len(chunk)
                    if self.size is not None and got > self.size:
                        raise ProtocolError(f"download of {self._what}: more bytes than the {self.size} announced")
                    yield chunk
                if self.size is None:
                    self.size = got  # a compressed body of unknown length: complete when the stream ended cleanly
                if got == self.size:
                    return
                error: VSphereError = TransferError(
                    f"download of {self._what}: cut short at {got} of {self.size} bytes")
            except httpx.DecodingError as e:
                error = TransferError(f"download of {self._what}: the compressed body is damaged ({e})")
            except httpx.HTTPError as e:
                # a body that stopped for longer than the timeout is ETIMEDOUT, as the docs promise; a cut is EIO
                error = TransferError(f"download of {self._what}: {connection_error(e, 'connection')}",
                                      errno=errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else None)
            finally:
                await response.aclose()
            await self._renew(error)

    async def into(self, sink: Sink) -> None:
        """The body read by a thread of its own straight into `sink`'s buffers (download.py); the same checks,
        errors and one renewed URL as `chunks()`. Through a proxy (the environment names one), `chunks()`."""
        if _proxied(self._route.url):
            return await super().into(sink)
        if self._used:
            raise TransferError(f"download of {self._what}: a transfer is read once")
        self._used = True
        got = 0  # bytes given to the sink
        while True:
            fetch = Fetch(self._route.url, self._route.sni, self._clients.ssl_context(self._route.pin),
                          self._route.pin, self._clients.timeout.read, self._clients.timeout.connect,
                          list(HEADERS.items()), self.size, got, sink, self._what, self._learn_size)
            try:
                await trio.to_thread.run_sync(fetch.run, abandon_on_cancel=True, limiter=self._clients.threads())
            except Stopped:
                return
            except httpx.DecodingError as e:
                error: VSphereError | None = TransferError(
                    f"download of {self._what}: the compressed body is damaged ({e})")
            except httpx.HTTPError as e:
                if fetch.phase == "connect":
                    error = self._clients.failure(e, f"download of {self._what}", self._route)
                else:
                    error = TransferError(f"download of {self._what}: {connection_error(e, 'connection')}",
                                          errno=errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else None)
            else:
                error = None
            finally:
                fetch.stop()  # a cancelled wait left the thread running: its socket is shut, it ends at once
                got += fetch.got
                if self.size is None:
                    self.size = fetch.size
            log.debug("GET %s (%s): HTTP %s, %d bytes", _describe(self._route.url), self._what, fetch.status, fetch.got)
            if error is None:
                if fetch.status != 200:
                    error = TransferError(f"download of {self._what}: HTTP {fetch.status} from "
                                          f"{_describe(self._route.url)}")
                elif self.size is None:
                    self.size = got  # a compressed body of unknown length: complete when the stream ended cleanly
                    return
                elif got == self.size:
                    return
                elif got > self.size:
                    raise ProtocolError(f"download of {self._what}: more bytes than the {self.size} announced")
                else:
                    error = TransferError(f"download of {self._what}: cut short at {got} of {self.size} bytes")
            await self._renew(error)

    def _learn_size(self, size: int) -> None:
        self.size = size  # on the fetch's thread: one attribute, before the first byte reaches the sink

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


# ------------------------------------------------------------------------------------------- PUT
async def _file_chunks(source, size: int, progress, what: str):
    """Exactly `size` bytes of `source`, read off the trio thread; a shorter source is an error, not a short PUT."""
    own = not hasattr(source, "read")
    f = open(source, "rb") if own else source
    try:
        if not own:
            f.seek(0)
        sent = 0
        while sent < size:
            chunk = await trio.to_thread.run_sync(f.read, min(CHUNK, size - sent))
            if not chunk:
                raise TransferError(f"upload of {what}: the local file has {sent} bytes, not {size}",
                                    errno=errno.EIO)
            sent += len(chunk)
            if progress is not None:
                progress(sent)
            yield chunk
    finally:
        if own:
            f.close()


async def put_file(clients: TransferClients, route: Route, new_route: NewRoute, source, size: int, progress,
                   what: str) -> None:
    """PUT `size` bytes with that exact Content-Length (never chunked); one new URL and one more try on failure."""
    for attempt in (0, 1):
        try:
            status = await clients.put(route, source, size, progress, what)
        except httpx.HTTPError as e:
            cause = clients.failure(e, "connection", route)
            error: VSphereError = TransferError(f"upload of {what}: {cause}",
                                                errno=errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else None)
        else:
            log.debug("PUT %s (%s): HTTP %s, %d bytes", _describe(route.url), what, status, size)
            if status in (200, 201, 204):
                return
            error = TransferError(f"upload of {what}: HTTP {status} from {_describe(route.url)}")
        if attempt == 0:
            log.info("%s; asking for a new transfer URL", error)
            route = await new_route()
            continue
        raise error
