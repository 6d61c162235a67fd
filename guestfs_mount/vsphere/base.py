"""What both dialects share: the session token and its one-time re-login, per-VM flow control, transfer
clients, and parsing of guest times. Each dialect subclasses `DialectClient`."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable, TypeVar

import httpx
import trio

from guestfs_mount.vsphere.faults import ProtocolError
from guestfs_mount.vsphere.flow import GuestCallLimiter, limited_call, with_retries
from guestfs_mount.vsphere.guestfiles import ClientConfig, GuestFiles
from guestfs_mount.vsphere.transfer import TransferClients

log = logging.getLogger(__name__)
T = TypeVar("T")


class DialectClient(GuestFiles):
    def __init__(self, config: ClientConfig, http: httpx.AsyncClient):
        self.config = config
        self.http = http
        self.transfers = TransferClients(config)
        self._token: str | None = None
        self._login_lock = trio.Lock()
        self._limit = GuestCallLimiter(config.max_guest_calls_per_vm)

    async def login(self) -> None:
        raise NotImplementedError

    async def logout(self) -> None:
        raise NotImplementedError

    async def relogin(self, stale: str | None) -> None:
        """Log in again unless another task already replaced the stale token."""
        async with self._login_lock:
            if self._token == stale:
                log.info("vCenter session expired; logging in again")
                await self.login()

    def session_headers(self) -> dict[str, str]:
        return {"vmware-api-session-id": self._token} if self._token else {}

    async def guest_call(self, vm: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A guest operation: at most N at once per VM (background calls after interactive ones, flow.py), retried
        with backoff while the guest is busy."""
        return await with_retries(lambda: limited_call(self._limit, vm, call), self.config.retries, what)

    async def aclose(self) -> None:
        try:
            with trio.move_on_after(self.config.timeout):
                if self._token:
                    await self.logout()
        except Exception as e:  # logging out of a dead server must not hide why we are closing
            log.debug("logout failed: %s", e)
        finally:
            self._token = None
            await self.transfers.aclose()
            await self.http.aclose()


def parse_time(value, what: str) -> float | None:
    """ISO-8601 (`2024-05-01T10:00:00Z`, fractions allowed) -> POSIX seconds; None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"unexpected answer from vCenter: {what} is not a time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(f"unexpected answer from vCenter: {what} {value!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    """POSIX seconds -> ISO-8601 UTC as vCenter takes it (guests keep whole seconds)."""
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def basename(path: str) -> str:
    stripped = path.rstrip("/\\") or path
    return stripped.replace("\\", "/").rsplit("/", 1)[-1] or stripped
