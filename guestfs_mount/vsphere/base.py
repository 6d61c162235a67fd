"""What both dialects share: the session token and its one-time re-login, per-VM flow control, ESXi host knowledge
and transfer clients, paged listings, and parsing of guest times and records. Each dialect subclasses
`DialectClient`."""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import datetime, timezone
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import httpx
import trio

from guestfs_mount.vsphere.faults import ProtocolError
from guestfs_mount.vsphere.flow import GuestCallLimiter, limited_call, with_retries
from guestfs_mount.vsphere.guestfiles import ClientConfig, GuestFiles
from guestfs_mount.vsphere.hosts import EsxiHosts, Route
from guestfs_mount.vsphere.model import FileType, GuestFileInfo
from guestfs_mount.vsphere.transfer import TransferClients

log = logging.getLogger(__name__)
T = TypeVar("T")


class DialectClient(GuestFiles):
    def __init__(self, config: ClientConfig, http: httpx.AsyncClient):
        self.config = config
        self.http = http
        # the dialect gives it a reader when it can
        self.hosts = EsxiHosts(config.url, config.transfer_host, api_pin=config.thumbprint)
        self.transfers = TransferClients(config, on_refused=self.hosts.forget)
        self._token: str | None = None
        self._login_lock = trio.Lock()
        self._limit = GuestCallLimiter(config.max_guest_calls_per_vm)
        self._about: dict[str, str] = {}
        self.routes: dict[str, Route] = {}  # the last transfer route of each VM (`guestfs-mount check` shows it)

    async def start(self) -> None:
        """Log in and learn what the dialect needs; refuses a vCenter too old for it (UnsupportedVCenter)."""
        raise NotImplementedError

    @property
    def about(self) -> dict[str, str]:
        """What vCenter says it is ("product", "version", "build"; absent when it does not tell), once started."""
        return self._about

    @property
    def logged_in(self) -> bool:
        return self._token is not None

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

    async def route(self, vm: str, url: str) -> Route:
        """Where a transfer URL of `vm` goes and which certificate it must present."""
        route = self.routes[vm] = await self.hosts.route(vm, url)
        return route

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


def format_time(seconds: float, millis: bool = False) -> str:
    """POSIX seconds -> ISO-8601 UTC as vCenter takes it (guests keep whole seconds); `millis`: vAPI's canonical
    DateTime form (`...:00.000Z`) for REST."""
    text = datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (".000Z" if millis else "Z")


def as_link(info: GuestFileInfo) -> GuestFileInfo:
    """The guest agent stats through a symlink: it reports the target's mode, owner and times (all zeros for a
    dangling link). A link shows as links do: rwxrwxrwx, its size the length of its target."""
    if info.type is not FileType.SYMLINK:
        return info
    return dataclasses.replace(info, permissions=0o777, size=len(os.fsencode(info.symlink_target or "")))


# (entries of one page, positions left after it); `.` and `..` count as entries and are dropped here
PageFetch = Callable[[int], Awaitable[tuple[list[GuestFileInfo], int]]]


async def paged_listing(fetch: PageFetch, page_size: int, what: str) -> AsyncIterator[GuestFileInfo]:
    """Every entry of a listing fetched page by page (`fetch(index)`), each name once.

    The guest agent (open-vm-tools vixTools.c) leaves out an entry whose size it cannot read but still counts it,
    so a page can hold fewer entries than asked while more remain: the next index, taken from the entries we got,
    then repeats some (dropped here by name), and a page whose entries were all left out moves on by a whole page
    instead of ending the listing."""
    index, seen, stalled = 0, set(), None
    while True:
        entries, remaining = await fetch(index)
        for info in entries:
            if info.name not in (".", "..") and info.name not in seen:
                seen.add(info.name)
                yield info
        if remaining <= 0:
            return
        if entries:
            stalled = None
        elif stalled is not None and remaining >= stalled:
            raise ProtocolError(f"listing of {what} does not advance: empty pages with {remaining} entries left")
        else:
            stalled = remaining
        index += len(entries) or page_size


def basename(path: str) -> str:
    stripped = path.rstrip("/\\") or path
    return stripped.replace("\\", "/").rsplit("/", 1)[-1] or stripped
