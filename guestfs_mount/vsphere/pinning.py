"""Accepting exactly one TLS certificate, by the SHA-256 of its DER form, as govmomi's thumbprint check and pyVmomi's
`thumbprint` do: the handshake verifies neither chain, name nor dates (a self-signed or expired lab certificate
works), and the fingerprint comparison, right after the handshake and before any HTTP byte is sent, decides.

Python's ssl has no verify callback, hence the check in httpcore's network backend (and after the handshake of an
upload's own connection, upload.py). Two users: transfers to an ESXi host pinned to the certificate vCenter reports
for it (transfer.py), and the API connection to vCenter itself when `[vcenter] thumbprint` is set (http.py).
"""

from __future__ import annotations

import hashlib
import ssl

import httpcore
import httpx


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, "AB:CD:..." (govmomi's ThumbprintSHA256 form)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# what a refusal says, by whose certificate was pinned: {address} {got} {want} are filled in
ESXI_MISMATCH = ("the ESXi host's TLS certificate is not the one vCenter reports for that host: {address} presented "
                 "SHA-256 {got}, vCenter reports {want}; refused (the host's certificate was renewed since vCenter "
                 "read it, or something is in between)")
VCENTER_MISMATCH = ("vCenter's TLS certificate is not the one [vcenter] thumbprint pins: {address} presented SHA-256 "
                    "{got}, thumbprint is {want}; refused (vCenter's certificate was renewed, or something is in "
                    "between: compare with `guestfs-mount trust URL`, then update thumbprint)")


class CertificateMismatch(httpcore.ConnectError):
    """The peer's certificate is not the pinned one."""

    def __init__(self, message: str, address: str, got: str, want: str):
        super().__init__(message.format(address=address, got=got, want=want))
        self.address, self.got, self.want = address, got, want


def refusal(der: bytes | None, pin: str, address: str, message: str = ESXI_MISMATCH) -> CertificateMismatch | None:
    """Why the certificate `der` (None: the peer sent none) a handshake with `address` got is refused, or None when
    it is the pinned one. Every pinned connection checks here: httpx's (below), download.py's and upload.py's."""
    got = fingerprint(der) if der else "(none)"
    return None if got == pin else CertificateMismatch(message, address, got, pin)


class _PinCheckingStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream, pin: str, address: str, message: str):
        self._stream, self._pin, self._address, self._message = stream, pin, address, message

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        refused = refusal(tls.get_extra_info("ssl_object").getpeercert(binary_form=True), self._pin, self._address,
                          self._message)
        if refused is not None:
            await tls.aclose()
            raise refused
        return tls

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _PinningBackend(httpcore.AsyncNetworkBackend):
    """trio's network backend, with every TLS handshake checked against one certificate fingerprint."""

    def __init__(self, pin: str, message: str):
        self._pin, self._message = pin, message
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinCheckingStream(stream, self._pin, f"{host}:{port}", self._message)

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_context() -> ssl.SSLContext:
    """TLS that checks nothing in the handshake: the fingerprint, compared right after it, decides."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that accepts exactly the certificate whose SHA-256 is `pin` ("AB:CD:..."); any other is
    refused with `message` (ESXI_MISMATCH, VCENTER_MISMATCH)."""

    def __init__(self, pin: str, limits: httpx.Limits, message: str = ESXI_MISMATCH):
        context = pinned_context()
        super().__init__(verify=context, limits=limits)
        # httpx's transport takes no network backend: its pool (never opened) is replaced by one that checks
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinningBackend(pin, message))
