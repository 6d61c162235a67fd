"""The write-back queue (`[mount] write_back = true`): close() returns once the bytes are in the spool file, and
the upload runs later, in the background.

A file enters the queue at the close of its last writer (`add`); its `OpenFile` stays in the handle table until the
upload has landed, so everything the mount shows of it (getattr, reads, listings, a rename) is its spool's latest
state, and a rename moves the pending upload (operations.py). An upload starts `delay` seconds after the last
close, so that what a copying tool does right after close (rsync: utimes, chmod, rename of its temp name) rides on
the upload's initiate instead of costing calls of its own; oldest first, at most `per_vm` at a time per VM, as
background guest calls (flow.py: never ahead of a program's own call). Whatever comes next to the same file waits
for an upload in flight (the file's lock): a write, a rename, a chmod, an unlink, a rename of its directory; an
upload not started yet simply carries the newer bytes (a new write supersedes it).

Waiting for uploads: fsync() of the file (its upload now, its errno), `guestfs-mount sync` (`sync`: every upload
under some paths, started now and as interactive calls), and a writer's close while the queue holds more than
`max_bytes` (`room`). A failed upload is retried after a pause for faults that pass (vCenter or the host did not
answer) at most `RETRIES` times; then, or at once for any other fault (disk full, VM off, login refused), the
owner's `give_up` keeps the bytes in the recovery directory and the failure is listed (`status`) and reported once
by `sync`. At a stop the mount uploads what is still dirty (uploads.py `flush_all`), the queued files included, and
the recovery directory takes the rest; a spool with unsaved bytes names its guest path (spool.py), so after a
SIGKILL the next start moves it there too (leftovers.py).
"""

from __future__ import annotations

import errno
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from guestfs_mount.fs.handles import OpenFile
from guestfs_mount.fs.inodes import is_under
from guestfs_mount.vsphere.guestfiles import Priority, call_priority

log = logging.getLogger(__name__)

RETRIES = 3  # further attempts of an upload that failed for a fault that passes
RETRY_DELAYS = (2.0, 10.0, 30.0)  # seconds before each of them
# errnos of "vCenter or the host did not answer" (or was busy): worth another attempt later
TRANSIENT = frozenset({errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EAGAIN,
                       errno.EBUSY})
MAX_FAILURES = 1000  # failed uploads listed (the oldest go first)


@dataclass(eq=False)
class PendingUpload:
    of: OpenFile
    queued: float  # time.time() of the first close that queued it (its age in `status`)
    due: float  # trio clock: not before then, unless urged
    priority: Priority = field(default_factory=Priority)
    attempts: int = 0
    urgent: bool = False  # someone waits for it (sync, fsync, a writer over the bound): no delay
    running: bool = False
    vm: str = ""
    last_error: str | None = None


@dataclass
class Failure:
    path: str
    error: str
    errno: int
    kept: str | None  # where in the recovery directory its bytes are (None: they could not be kept)
    when: float = field(default_factory=time.time)
    reported: bool = False  # by a `sync` already


class WriteBack:
    """The queue. The owner (operations.py) gives it how to upload a file and what to do when it cannot:

    - `upload(of)`: upload the file to its current path (raises the guest call's error, keeps the bytes dirty);
    - `give_up(of, error)`: keep the bytes in the recovery directory, show the guest's file again; returns where
      they are (or None when they were not dirty any more: another upload got there first);
    - `finished(of)`: the queue lets go of the file (delete its spool unless a handle still has it open);
    - `path_of(of)`: its mount path now (None once unlinked);
    - `writing(of)`: whether a program may still write to it (then its close queues it again).
    """

    def __init__(self, *, delay: float, max_bytes: int, per_vm: int,
                 upload: Callable[[OpenFile], Awaitable[None]],
                 give_up: Callable[[OpenFile, Exception], Awaitable[str | None]],
                 finished: Callable[[OpenFile], Awaitable[None]],
                 path_of: Callable[[OpenFile], str | None],
                 writing: Callable[[OpenFile], bool]) -> None:
        self.delay = delay
        self.max_bytes = max_bytes
        self.per_vm = max(1, per_vm)
        self._upload, self._give_up, self._finished = upload, give_up, finished
        self._path_of, self._writing = path_of, writing
        self.entries: dict[int, PendingUpload] = {}  # by inode; insertion order is queue order (oldest first)
        self.failures: list[Failure] = []
        self._running: dict[str, int] = {}  # VM -> uploads in flight
        self._wake = trio.Event()  # something to start may have come
        self._settled = trio.Event()  # an upload ended (for those who wait)
        self.uploaded = 0  # figures for `status`
        self.failed = 0

    # --- what the mount asks ---------------------------------------------------------------------------
    def holds(self, of: OpenFile | None) -> bool:
        return of is not None and self.entries.get(of.inode) is not None and self.entries[of.inode].of is of

    def uploading(self, of: OpenFile | None) -> bool:
        return self.holds(of) and self.entries[of.inode].running

    def add(self, of: OpenFile) -> bool:
        """Queue `of`'s upload (its last writer closed it). False when it is queued already (it carries the newer
        bytes: an upload not started reads the spool when it starts; one in flight held off every write)."""
        entry = self.entries.get(of.inode)
        if entry is not None and entry.of is of:
            if not entry.running:
                entry.due = trio.current_time() + self.delay  # changed again: what follows may still ride on it
            self._poke()
            return False
        self.entries[of.inode] = PendingUpload(of, queued=time.time(), due=trio.current_time() + self.delay)
        self._poke()
        return True

    def pending_bytes(self, but: OpenFile | None = None) -> int:
        return sum(_size(e.of) for e in self.entries.values() if e.of is not but)

    async def room(self, of: OpenFile) -> None:
        """Until the queue holds at most `max_bytes` besides `of` (a writer blocks, it does not fail): uploads
        start at once meanwhile."""
        while self.entries and self.pending_bytes(but=of) > self.max_bytes:
            for entry in self.entries.values():
                self._urge(entry)
            self._poke()
            await self._wait_settled()

    def urge(self, of: OpenFile) -> None:
        """A program waits for this file's upload (fsync): start it now, as an interactive call."""
        if self.holds(of):
            self._urge(self.entries[of.inode])
            self._poke()

    def any_under(self, path: str) -> bool:
        return any(self._under(e, [path]) for e in self.entries.values())

    def files_under(self, path: str) -> list[OpenFile]:
        return [e.of for e in self.entries.values() if self._under(e, [path])]

    async def sync(self, paths: list[str]) -> list[Failure]:
        """Start every queued upload under `paths` ("" for all) now and wait until they have all ended; returns
        the failures under `paths` no `sync` has reported yet (they are reported now)."""
        while True:
            waiting = [e for e in self.entries.values() if self._under(e, paths)]
            if not waiting:
                break
            for entry in waiting:
                self._urge(entry)
            self._poke()
            await self._wait_settled()
        found = [f for f in self.failures if not f.reported and any(is_under(f.path, p) for p in paths)]
        for failure in found:
            failure.reported = True
        return found

    def forget_failures(self, path: str) -> None:
        """`path` was uploaded since, or removed: its earlier failure is history."""
        self.failures = [f for f in self.failures if f.path != path]

    def snapshot(self) -> dict:
        """Pending and failed uploads, for `guestfs-mount status`."""
        now = time.time()
        pending = []
        for entry in self.entries.values():
            path = self._path_of(entry.of)
            if path is None:
                continue
            pending.append({"path": path, "bytes": _size(entry.of), "age_s": round(now - entry.queued, 1),
                            "attempts": entry.attempts,
                            "state": "uploading" if entry.running else "waiting" if entry.attempts else "queued",
                            **({"last_error": entry.last_error} if entry.last_error else {})})
        failed = [{"path": f.path, "error": f.error, "errno": f.errno, "kept": f.kept,
                   "age_s": round(now - f.when, 1)} for f in self.failures]
        return {"pending": pending, "failed": failed}

    def figures(self) -> dict[str, int]:
        return {"pending_uploads": len(self.entries), "pending_upload_bytes": self.pending_bytes(),
                "uploads_written_back": self.uploaded, "uploads_failed": self.failed}

    # --- the queue's task ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Runs for the mount's life (mount.py): starts uploads as they fall due, each in a task of its own."""
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                next_due = math.inf
                for entry in list(self.entries.values()):
                    if entry.running:
                        continue
                    # urged: no delay before a first attempt; a retry waits its pause all the same (a sync
                    # during a vCenter blip must not spend the attempts in a second)
                    if entry.due > now and not (entry.urgent and not entry.attempts):
                        next_due = min(next_due, entry.due)
                        continue
                    path = self._path_of(entry.of)
                    vm = path.partition("/")[0] if path else ""
                    if self._running.get(vm, 0) >= self.per_vm:
                        continue
                    entry.running, entry.vm = True, vm
                    self._running[vm] = self._running.get(vm, 0) + 1
                    nursery.start_soon(self._run_one, entry)
                with trio.move_on_at(next_due):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _run_one(self, entry: PendingUpload) -> None:
        of = entry.of
        try:
            if of.dirty and self._path_of(of) is not None and not self._writing(of):
                entry.attempts += 1
                try:
                    with call_priority(entry.priority):
                        await self._upload(of)
                except Exception as e:
                    if not await self._failed(entry, e):
                        return  # to be tried again
                else:
                    self.uploaded += 1
                    path = self._path_of(of)
                    if path is not None:
                        self.forget_failures(path)
        finally:
            entry.running = False
            self._running[entry.vm] -= 1
            self._poke()
        if self.entries.get(of.inode) is entry:
            if of.dirty and not self._writing(of) and self._path_of(of) is not None:
                entry.due = trio.current_time() + self.delay  # written again since: once more
                entry.attempts = 0
                return
            del self.entries[of.inode]
        self._settle()
        await self._finished(of)

    async def _failed(self, entry: PendingUpload, error: Exception) -> bool:
        """Whether the upload's failure is final (the bytes were kept), or it is to be tried again."""
        err = getattr(error, "errno", None) or errno.EIO
        entry.last_error = str(error) or f"errno {err}"
        if err in TRANSIENT and entry.attempts <= RETRIES and entry.of.dirty:
            delay = RETRY_DELAYS[min(entry.attempts, len(RETRY_DELAYS)) - 1]
            log.info("upload of %s failed (%s); attempt %d of %d in %g s", self._path_of(entry.of),
                     entry.last_error, entry.attempts + 1, RETRIES + 1, delay)
            entry.due = trio.current_time() + delay
            entry.urgent = False
            self._settle()
            return False
        path = self._path_of(entry.of)
        kept = await self._give_up(entry.of, error)
        if kept is not None and path is not None:
            self.failed += 1
            self.forget_failures(path)
            self.failures.append(Failure(path, entry.last_error, err, kept or None))
            del self.failures[:-MAX_FAILURES]
        return True

    # --- helpers -----------------------------------------------------------------------------------------
    def _urge(self, entry: PendingUpload) -> None:
        entry.urgent = True
        entry.priority.promote()

    def _under(self, entry: PendingUpload, paths: list[str]) -> bool:
        path = self._path_of(entry.of)
        if path is None:  # unlinked: its entry goes as soon as the queue gets to it
            return "" in paths
        return any(is_under(path, p) for p in paths)

    def _poke(self) -> None:
        self._wake.set()

    def _settle(self) -> None:
        self._settled.set()
        self._settled = trio.Event()

    async def _wait_settled(self) -> None:
        await self._settled.wait()


def _size(of: OpenFile) -> int:
    try:
        return of.spool.size()
    except OSError:
        return 0
