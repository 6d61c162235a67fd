"""The HTTP side of API calls: one pooled httpx.AsyncClient per vCenter, timeouts, TLS settings, and decoding
that turns anything that is not the JSON we expect into a `ProtocolError` (never a KeyError three calls later).

Nothing here logs a request body, a session id or a transfer token.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import ssl
import struct
from typing import Any
from urllib.parse import urlsplit

import httpx

from guestfs_mount.vsphere.faults import ConnectionFailed, ProtocolError
from guestfs_mount.vsphere.guestfiles import ClientConfig
from guestfs_mount.vsphere.pinning import VCENTER_MISMATCH, PinnedTransport

log = logging.getLogger(__name__)

USER_AGENT = "guestfs-mount/0.1"
MAX_ERROR_BODY = 1 << 20  # an error page larger than this is not read whole


def tls_verify(config: ClientConfig) -> ssl.SSLContext | bool:
    """What httpx verifies vCenter's certificate with: system CAs, the configured CA file, or nothing."""
    if urlsplit(config.url).scheme != "https":
        return True  # plain http (the simulator): nothing to verify
    if config.insecure:
        log.warning("TLS verification is OFF for %s (insecure = true): anyone on the path can read the passwords",
                    urlsplit(config.url).hostname)
        return False
    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    return True


def timeouts(config: ClientConfig) -> httpx.Timeout:
    return httpx.Timeout(config.timeout, connect=config.connect_timeout)


def make_api_client(config: ClientConfig) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    if config.thumbprint and urlsplit(config.url).scheme == "https" and not config.insecure:
        # [vcenter] thumbprint: exactly that certificate, whatever its chain, name or dates
        trust: dict = {"transport": PinnedTransport(config.thumbprint, limits, VCENTER_MISMATCH)}
    else:
        trust = {"verify": tls_verify(config), "limits": limits}
    return httpx.AsyncClient(
        base_url=config.url,
        timeout=timeouts(config),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=False,
        **trust,
    )


def root_cause(e: BaseException) -> BaseException:
    seen = 0
    while (e.__cause__ or e.__context__) is not None and seen < 10:
        e = e.__cause__ or e.__context__
        seen += 1
    return e


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """The kernel's send and receive timeouts of a blocking socket (a call that waits longer fails with EAGAIN): a
    transfer thread's socket, where a Python timeout would make it non-blocking and poll before every call."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def transport_error(e: BaseException, on_timeout: type, otherwise: type) -> httpx.TransportError:
    """A socket failure of a transfer made without httpx (download.py, upload.py) as the exception httpx would have
    raised, so that one mapping (`connection_error`, transfer.py) serves all. A timeout is Python's (TimeoutError) or
    the kernel's SO_SNDTIMEO / SO_RCVTIMEO running out: EAGAIN on a blocking socket, OpenSSL's "want" under TLS."""
    if isinstance(e, (TimeoutError, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)):
        return on_timeout("timed out")
    return otherwise(str(e) or type(e).__name__)


def connection_error(e: httpx.HTTPError, what: str) -> ConnectionFailed:
    """A transport failure as the one exception callers see, with its real cause (a certificate that is not
    trusted, a refused connection...); the URL (and its query) is never in the text."""
    if isinstance(e, httpx.TimeoutException):
        return ConnectionFailed(f"{what}: timed out ({type(e).__name__})", errno=errno.ETIMEDOUT)
    root = root_cause(e)
    if isinstance(root, ssl.SSLCertVerificationError):
        reason = (f"TLS certificate not trusted ({root.verify_message}); set ca_file to the CA that signed it "
                  "(`guestfs-mount trust URL` fetches vCenter's), or pin it with thumbprint (or insecure = true, "
                  "for a lab only)")
    else:
        reason = str(e).split("\n")[0] or str(root).split("\n")[0] or type(root).__name__
    return ConnectionFailed(f"{what}: {reason}")


async def send(client: httpx.AsyncClient, method: str, url: str, what: str, **kwargs) -> httpx.Response:
    """One API request with its whole (small) body read; transport failures -> ConnectionFailed."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.HTTPError as e:
        raise connection_error(e, what) from None


def decode_json(response: httpx.Response, what: str) -> Any:
    """The response's JSON, or a ProtocolError that says what came instead."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type")
        start = response.content[:80].decode("utf-8", "replace").replace("\n", " ")
        raise ProtocolError(f"{what}: HTTP {response.status_code} answer is not JSON ({kind}): {start!r}") from None


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """`value` if it has the expected JSON type, else a ProtocolError naming the field."""
    # bool is an int in Python; a JSON true is never a size
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        raise ProtocolError(f"unexpected answer from vCenter: {what} is {type(value).__name__}, not {_names(kind)}")
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def field(obj: Any, key: str, kind: type | tuple[type, ...], what: str, default: Any = ...) -> Any:
    """obj[key] checked for type; missing -> default (or ProtocolError when there is none)."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"unexpected answer from vCenter: {what} is not an object")
    if key not in obj or obj[key] is None:
        if default is ...:
            raise ProtocolError(f"unexpected answer from vCenter: {what} has no {key!r}")
        return default
    return expect(obj[key], kind, f"{what}.{key}")
