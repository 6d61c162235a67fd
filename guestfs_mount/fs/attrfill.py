"""Attributes for REST listings. A REST listing carries only name, type and size, so `ls -l` needs one stat per
entry; done one at a time as the kernel asks, 1,000 entries at 100 ms take 100 s. When the kernel asks for the
full record of an entry of a listed directory, a pass over that directory fetches the records of the entries after
it too, several at a time (within the per-VM limit of guest calls), so the program's next getattr calls find them
ready or on their way. A plain `ls` or `find` asks for no record, and pays for none.

A pass keeps at most `ahead` entries beyond the last one asked for in flight or fetched and not yet asked for, so
one `stat` of one file costs a few calls more at most, all at once; it ends once it has had nothing to do for
`LINGER` seconds. While it runs it keeps the listing it completes alive; whenever it runs out of work its
records live attr_ttl from then, and the listing dir_ttl (`MetaCache.restamp`), as does the directory's own
record: `ls -l` again right after costs no call, however long the first one took.

The passes run in a nursery the mount owns (`run`), cancelled at unmount.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Awaitable, Callable

import pyfuse3
import trio

from guestfs_mount.fs.inodes import join, split
from guestfs_mount.fs.metacache import MetaCache, is_complete
from guestfs_mount.vsphere.guestfiles import call_priority
from guestfs_mount.vsphere.model import GuestFileInfo

log = logging.getLogger(__name__)

LINGER = 0.5  # seconds a pass with nothing to do waits for the program's next getattr before it ends

# fetches one path's full record and caches it (operations.py `_fetch_record`); FUSEError when it fails
Fetch = Callable[[str], Awaitable[GuestFileInfo]]


class _Pass:
    """The records of one listed directory being fetched: a queue in listing order, front first."""

    def __init__(self, cache: MetaCache, directory: str, listing: dict[str, GuestFileInfo]) -> None:
        self.directory = directory
        self.listing = listing
        self.mark = cache.mark()
        self.order = [name for name, info in listing.items() if not is_complete(info)]
        self.index = {name: i for i, name in enumerate(self.order)}
        self.queue: deque[str] = deque()
        self.wanted: set[str] = set()  # queued, in flight or done
        self.frontier = -1  # index of the last name queued by a window
        self.done: dict[str, trio.Event] = {}
        self.results: dict[str, GuestFileInfo | pyfuse3.FUSEError] = {}
        self.records: dict[str, GuestFileInfo] = {}  # mount path -> record this pass put in the cache
        own = cache.attrs.get(directory)  # the directory's own record, which `ls -l DIR` fetched just before
        if own is not None:
            self.records[directory] = own
        self.work = trio.Event()
        self.in_flight = 0
        self.finished = False

    def ask(self, name: str, ahead: int) -> trio.Event:
        """Want `name` now (front of the queue) and the `ahead` names after it."""
        if name not in self.wanted:
            self.wanted.add(name)
            self.queue.appendleft(name)
        end = min(len(self.order), self.index[name] + ahead + 1)
        for i in range(max(self.frontier + 1, self.index[name] + 1), end):
            if self.order[i] not in self.wanted:
                self.wanted.add(self.order[i])
                self.queue.append(self.order[i])
        self.frontier = max(self.frontier, end - 1)
        self.work.set()
        return self.done.setdefault(name, trio.Event())


class AttributeFill:
    def __init__(self, cache: MetaCache, fetch: Fetch, workers: int, ahead: int | None = None) -> None:
        self.cache = cache
        self.fetch = fetch
        self.workers = max(1, workers)
        self.ahead = ahead if ahead is not None else 2 * self.workers
        self._passes: dict[str, _Pass] = {}
        self._nursery: trio.Nursery | None = None
        self.fetched = 0  # records fetched by passes (for `status`)

    async def run(self) -> None:
        """Runs for the mount's life (mount.py): owns the passes."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def record(self, path: str) -> GuestFileInfo | None:
        """The full record of `path`, an entry of a listed directory whose listing lacks it, fetched by a pass over
        the directory (started or joined). None when no pass can give it (not in such a listing): the caller stats
        it itself. FUSEError when its fetch failed."""
        directory, name = split(path)
        listing = self.cache.listing(directory)
        if self._nursery is None or listing is None or name not in listing or is_complete(listing[name]):
            return None
        p = self._passes.get(directory)
        if p is None or p.finished or p.listing is not listing or name not in p.index:
            p = self._passes[directory] = _Pass(self.cache, directory, listing)
            self._nursery.start_soon(self._run, p)
        await p.ask(name, self.ahead).wait()
        result = p.results.get(name)
        if isinstance(result, pyfuse3.FUSEError):
            raise result
        return result

    async def _run(self, p: _Pass) -> None:
        # the calls serve a program waiting in getattr: interactive, whoever asked first (a prefetch may)
        with call_priority(None):
            try:
                while True:
                    async with trio.open_nursery() as nursery:
                        for _ in range(self.workers):
                            nursery.start_soon(self._worker, p)
                    if not p.queue:
                        break
            finally:
                p.finished = True
                for event in p.done.values():  # names never fetched: their callers stat them themselves
                    event.set()
                if self._passes.get(p.directory) is p:
                    del self._passes[p.directory]
                self.cache.restamp(p.directory, p.listing, p.records, p.mark)

    async def _worker(self, p: _Pass) -> None:
        while True:
            if not p.queue:
                if p.in_flight == 0:  # out of work: what it fetched counts from now
                    self.cache.restamp(p.directory, p.listing, p.records, p.mark)
                if p.work.is_set():
                    p.work = trio.Event()
                with trio.move_on_after(LINGER):
                    await p.work.wait()
                if not p.queue:
                    return
            name = p.queue.popleft()
            path = join(p.directory, name)
            p.in_flight += 1
            try:
                info = await self.fetch(path)
            except pyfuse3.FUSEError as e:
                p.results[name] = e
            else:
                p.results[name] = info
                self.fetched += 1
                if self.cache.attrs.get(path) is info:  # cached by this fetch (not an answer older than our change)
                    p.records[path] = info
            finally:
                p.in_flight -= 1
                p.done.setdefault(name, trio.Event()).set()
                self.cache.restamp(p.directory, p.listing, {}, p.mark)  # the listing lives while the pass runs
