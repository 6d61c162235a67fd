"""Prefetch for directory scans. When one process reads the files of a directory one after another (`cp -r`,
`tar c`, `grep -r`, `rsync` from the mount, `find -exec cat`), the next small files of that directory are fetched
into the content cache (contentcache.py) side by side, so the reads that follow find them there.

A scan is one reader in one directory; a reader is the parent of the process that opens (`find -exec cat {} \\;`
runs a new `cat` for each file, a multi-threaded reader opens from several threads), or that process when its
parent cannot be read. It is recognised when the reader opens two files that are next to each other in the
directory's listing, in the listing's order (cp, tar, grep, find) or in name order (rsync); from then on each open
of a file of the scan keeps the `prefetch_files` regular files after it (of at most `prefetch_max_kib` each;
larger ones are skipped) fetched or being fetched. Only a directory whose listing the mount holds is scanned
(these programs list it first).

Priority: a prefetch's guest calls are background calls (flow.py): they take a VM's slot only when no program's
call waits for one and two stay free. A program that opens a file being prefetched waits for that prefetch,
promoted to interactive calls (`settle`), instead of fetching the file again.

A prefetch that fails is silent (the program's own read then fetches the file and reports). Every prefetch runs in
the nursery the mount owns (`run`); a scan whose reader is gone or that opened nothing for `IDLE_S` seconds has
its prefetches cancelled, and unmounting cancels all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from guestfs_mount.fs.contentcache import ContentCache, download_key
from guestfs_mount.fs.inodes import join, split
from guestfs_mount.fs.metacache import MetaCache
from guestfs_mount.fs.status import LiveTransfers
from guestfs_mount.vsphere.guestfiles import GuestFiles, Priority, call_priority
from guestfs_mount.vsphere.model import FileType, GuestFileInfo

log = logging.getLogger(__name__)

IDLE_S = 3.0  # a scan that opened nothing for this long is over: its prefetches still running are cancelled
SWEEP_S = 0.5  # how often scans are checked for that (and for their process being gone)


@dataclass(eq=False)
class _Job:
    path: str
    priority: Priority = field(default_factory=Priority)
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(eq=False)
class _Scan:
    reader: int  # a process id (see reader_of)
    directory: str
    touched: float
    last: str | None = None  # the file it opened last
    order: list[str] | None = None  # the regular files in the order it reads them, once recognised
    position: dict[str, int] | None = None  # name -> its index in `order`
    listing: dict | None = None  # the listing `order` was made from
    opened: set[str] = field(default_factory=set)
    jobs: dict[str, _Job] = field(default_factory=dict)  # name -> prefetch running
    fetched: set[str] = field(default_factory=set)  # names prefetched already (or tried): never twice


def _orders(listing: dict[str, GuestFileInfo]):
    """The directory's regular files in listing order and in name order, each with its name -> index map."""
    files = [name for name, info in listing.items() if info.type is FileType.FILE]
    for order in (files, sorted(files)):
        yield order, {name: i for i, name in enumerate(order)}


def reader_of(pid: int) -> int:
    """The reader a FUSE request's pid belongs to: its parent process (`/proc/PID/stat`), else itself."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]) or pid
    except (OSError, IndexError, ValueError):
        return pid


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Prefetcher:
    def __init__(self, *, files: int, max_bytes: int, contents: ContentCache, cache: MetaCache, client: GuestFiles,
                 transfers: LiveTransfers, record: Callable[[str], Awaitable[GuestFileInfo]],
                 target: Callable[[str], Awaitable], is_open: Callable[[str], bool]) -> None:
        self.files = files
        self.max_bytes = max_bytes
        self.contents = contents
        self.cache = cache
        self.client = client
        self.transfers = transfers
        self.record = record  # a path's full record (REST: through the attribute fill)
        self.target = target  # mount path -> VM, guest login, guest path
        self.is_open = is_open
        self.enabled = files > 0 and max_bytes > 0 and contents.enabled
        self._scans: dict[tuple[int, str], _Scan] = {}
        self._inflight: dict[str, _Job] = {}  # mount path -> prefetch not done
        self._nursery: trio.Nursery | None = None
        self._scans_added = trio.Event()
        self.fetched = self.failed = self.cancelled = 0

    # --- the mount's side ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Runs for the mount's life (mount.py): owns the prefetches, ends idle scans."""
        if not self.enabled:
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    if not self._scans:
                        self._scans_added = trio.Event()
                        await self._scans_added.wait()
                    await trio.sleep(SWEEP_S)
                    self._sweep()
            finally:
                self._nursery = None

    def _sweep(self) -> None:
        now = trio.current_time()
        for key, scan in list(self._scans.items()):
            if now - scan.touched > IDLE_S or not _process_alive(scan.reader):
                self._end(key, scan)

    def _end(self, key, scan: _Scan) -> None:
        del self._scans[key]
        for job in list(scan.jobs.values()):
            job.scope.cancel()

    def opened(self, path: str, pid: int | None) -> None:
        """A process opened `path` to read it: the scan it may be part of moves on."""
        if self._nursery is None or not pid:
            return
        directory, name = split(path)
        listing = self.cache.listing(directory)
        if listing is None or name not in listing:
            return
        reader = reader_of(pid)
        key = (reader, directory)
        scan = self._scans.get(key)
        if scan is None:
            scan = self._scans[key] = _Scan(reader, directory, trio.current_time())
            self._scans_added.set()
        scan.touched = trio.current_time()
        scan.opened.add(name)
        if scan.order is None or scan.listing is not listing:
            scan.order = scan.position = scan.listing = None
            if scan.last is not None:
                # the order in which the two files opened last are next to each other, if one is
                for order, position in _orders(listing):
                    if position.get(name, -2) == position.get(scan.last, -2) + 1:
                        scan.order, scan.position, scan.listing = order, position, listing
                        break
        scan.last = name
        if scan.order is not None:
            self._top_up(scan, name, listing)

    def _top_up(self, scan: _Scan, name: str, listing: dict[str, GuestFileInfo]) -> None:
        if name not in scan.position:
            return
        ahead = 0
        for i in range(scan.position[name] + 1, len(scan.order)):
            if ahead >= self.files:
                break
            candidate = scan.order[i]
            info = listing.get(candidate)
            if info is None or info.type is not FileType.FILE or info.size > self.max_bytes:
                continue
            ahead += 1
            path = join(scan.directory, candidate)
            if (candidate in scan.opened or candidate in scan.fetched or candidate in scan.jobs
                    or path in self._inflight or self.contents.holds(path) or self.is_open(path)):
                continue
            job = scan.jobs[candidate] = self._inflight[path] = _Job(path)
            self._nursery.start_soon(self._run_job, scan, candidate, job)

    async def settle(self, path: str) -> None:
        """Before an open of `path` looks for a cached copy: a prefetch of it still running is waited for, its
        calls promoted (a program waits for them now)."""
        job = self._inflight.get(path)
        if job is not None:
            job.priority.promote()
            await job.done.wait()

    # --- one prefetch --------------------------------------------------------------------------------------
    async def _run_job(self, scan: _Scan, name: str, job: _Job) -> None:
        try:
            with job.scope, call_priority(job.priority):
                try:
                    if await self._fetch(job.path):
                        self.fetched += 1
                except Exception as e:  # silent: the program's own read fetches the file and reports
                    self.failed += 1
                    log.debug("prefetch of %s failed: %s", job.path, e)
            if job.scope.cancelled_caught:
                self.cancelled += 1
        finally:
            if self._inflight.get(job.path) is job:
                del self._inflight[job.path]
            scan.jobs.pop(name, None)  # a name kept, not the job: a scan of 100,000 files stays small
            scan.fetched.add(name)
            job.done.set()

    async def _fetch(self, path: str) -> bool:
        """Download `path` into the content cache; False when it is not to be kept (too big, changed meanwhile)."""
        mark = self.cache.mark()
        info = await self.record(path)
        if info.type is not FileType.FILE or info.size > self.max_bytes:
            return False
        target = await self.target(path)
        part = self.contents.part()
        started = time.time()
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            got = 0
            try:
                async with await self.client.open_read(target.vm.id, target.creds, target.guest_path) as transfer:
                    with self.transfers.start(target.vm.name, target.guest_path, "prefetch", transfer.size) as live:
                        async for chunk in transfer.chunks():
                            got += len(chunk)
                            if got > self.max_bytes:
                                return False
                            os.write(fd, chunk)
                            live.total = transfer.size
                            live.advance(got)
            finally:
                os.close(fd)
            # VI/JSON: the record the initiate gave; REST: the one asked for before, if the size is still its size
            record = transfer.info or (info if transfer.size == info.size else None)
            if record is None or got != transfer.size:
                return False
            key = download_key(dataclasses.replace(record, size=got), started)
            if key is None or self.cache.changed_since(path, mark) or self.is_open(path):
                return False
            return self.contents.add(path, part, key)
        finally:
            try:
                os.unlink(part)
            except FileNotFoundError:
                pass

    def figures(self) -> dict[str, int]:
        return {"prefetch_scans": len(self._scans), "prefetch_running": len(self._inflight),
                "prefetched_files": self.fetched, "prefetch_failed": self.failed,
                "prefetch_cancelled": self.cancelled}
