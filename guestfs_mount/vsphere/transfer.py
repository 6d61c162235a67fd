"""Transfer URLs (`https://<esxi or *>/guestFile?id=..&token=..`): streamed GET and exact-length PUT.

A URL is used once: a GET that fails (before its first byte or cut midway), or a PUT that fails, asks the caller
for a new URL (a new initiate) once, never re-sends to the spent one; a GET renewed midway skips the bytes already
delivered (transfer URLs have no Range). Each transfer uses a fresh connection (`Connection:
close`, as govmomi does: ESXi does not like kept-alive transfer sockets). TLS: the ESXi certificate from the
inventory is pinned when known (it is usually self-signed and the host name was rewritten), else the normal
verification of the API connection applies.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from typing import AsyncIterator, Awaitable, BinaryIO, Callable
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import trio

from guestfs_mount.vsphere.faults import ProtocolError, TransferError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig, ReadTransfer
from guestfs_mount.vsphere.http import USER_AGENT, connection_error, timeouts, tls_verify
from guestfs_mount.vsphere.model import GuestFileInfo

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes read from a local file per PUT chunk (each read is a hop to a worker thread)

# httpcore reads a socket 64 KiB at a time and its cost per read, in Python, capped a streamed GET near 270 MiB/s
# on the benchmark machine; 1 MiB reads gave 1.2 GiB/s (docs/performance.md). A class attribute: it applies to
# every HTTP/1.1 connection of the process, which are all ours.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1 << 20
NewURL = Callable[[], Awaitable[str]]


def resolve_host(url: str, api_url: str) -> str:
    """A transfer URL with `*` as host points at the server the API call went to (keep the URL's port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProtocolError(f"vCenter returned a transfer URL that is not http(s): {parts.scheme or 'no scheme'}")
    if parts.hostname != "*":
        return url
    host = urlsplit(api_url).hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate: the transfer URL's host name is rewritten, so the name is not checked,
    but the peer must present this certificate (partial chain: the leaf itself is the trust anchor)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=pem)
    return context


def _describe(url: str) -> str:
    """A transfer URL fit for a log line or an error: no token."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="token=***"))


class _PinnedClient(httpx.AsyncClient):
    """A transfer client that trusts one host certificate only: its TLS failures are pinning refusals."""


class TransferClients:
    """httpx clients for transfers: one per pinned certificate (or none), no kept-alive connections."""

    def __init__(self, config: ClientConfig):
        self._config = config
        self._default_verify = tls_verify(config) if not config.insecure else False
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self.get(None)  # made now: loading the CA store takes tens of ms, which the first read would wait for

    def get(self, pin_pem: str | None) -> httpx.AsyncClient:
        key = None if self._config.insecure else pin_pem
        if key not in self._clients:
            verify = pinned_context(key) if key else self._default_verify
            self._clients[key] = (_PinnedClient if key else httpx.AsyncClient)(
                verify=verify,
                timeout=timeouts(self._config),
                headers={"User-Agent": USER_AGENT, "Connection": "close"},
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._clients[key]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class HttpReadTransfer(ReadTransfer):
    """A download: `url` from the initiate call, `new_url()` for one more try when the GET fails at once."""

    def __init__(self, client: httpx.AsyncClient, url: str, new_url: NewURL, size: int | None,
                 info: GuestFileInfo | None, what: str):
        self._client = client
        self._url = url
        self._new_url = new_url
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
        self._url = await self._new_url()

    async def _open(self) -> httpx.Response:
        while True:
            try:
                request = self._client.build_request("GET", self._url)
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as e:
                error: VSphereError = connection_error(e, f"download of {self._what}",
                                                       pinned=isinstance(self._client, _PinnedClient))
            else:
                if response.status_code == 200:
                    return response
                await response.aclose()
                error = TransferError(f"download of {self._what}: HTTP {response.status_code} from "
                                      f"{_describe(self._url)}")
            await self._renew(error)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._used:
            raise TransferError(f"download of {self._what}: a transfer is read once")
        self._used = True
        got = 0  # bytes given to the caller
        while True:
            response = self._response = await self._open()
            try:
                length = response.headers.get("content-length")
                announced = int(length) if length is not None and length.isdigit() else None
                if self.size is None:
                    self.size = announced
                elif announced is not None and announced != self.size:
                    raise ProtocolError(f"download of {self._what}: {announced} bytes announced, the file has "
                                        f"{self.size}")
                # a URL that died midway (an ESXi hiccup, a cut connection) is renewed: the new GET starts at 0
                skip = got
                async for chunk in response.aiter_raw():  # as they arrive: the first bytes do not wait for a MiB
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    got += len(chunk)
                    if self.size is not None and got > self.size:
                        raise ProtocolError(f"download of {self._what}: more bytes than the {self.size} announced")
                    yield chunk
                if self.size is None or got == self.size:
                    return
                error: VSphereError = TransferError(
                    f"download of {self._what}: cut short at {got} of {self.size} bytes")
            except httpx.HTTPError as e:
                # a body that stopped for longer than the timeout is ETIMEDOUT, as the docs promise; a cut is EIO
                error = TransferError(f"download of {self._what}: {connection_error(e, 'connection')}",
                                      errno=errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else None)
            finally:
                await response.aclose()
            await self._renew(error)

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


async def _file_chunks(source: str | os.PathLike | BinaryIO, size: int, progress, what: str):
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


async def put_file(client: httpx.AsyncClient, url: str, new_url: NewURL, source, size: int, progress,
                   what: str) -> None:
    """PUT `size` bytes with that exact Content-Length (never chunked); one new URL and one more try on failure."""
    for attempt in (0, 1):
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        try:
            response = await client.put(url, content=_file_chunks(source, size, progress, what), headers=headers)
        except httpx.HTTPError as e:
            cause = connection_error(e, "connection", pinned=isinstance(client, _PinnedClient))
            error: VSphereError = TransferError(f"upload of {what}: {cause}",
                                                errno=errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else None)
        else:
            if response.status_code in (200, 201, 204):
                return
            error = TransferError(f"upload of {what}: HTTP {response.status_code} from {_describe(url)}")
        if attempt == 0:
            log.info("%s; asking for a new transfer URL", error)
            url = await new_url()
            continue
        raise error
