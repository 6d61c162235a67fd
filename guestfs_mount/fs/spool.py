"""Spool files: the local copy of one open guest file, on disk under `spool_dir`, never whole in memory.

A `Spool` is created empty (or `adopt`s a whole copy the content cache hands back: complete, no download).
`start_download` fills it from a guest GET in a background task (in the mount's
nursery) whose transfer receives on a thread of its own into a `RecentBytes` ring (readbuffer.py), which writes
each piece into the file; readers wait only until their byte range is there (`wait_for`) and take it from the
ring while it is still there, else from the file. A failed or short download fails every
waiter with the error's errno; it never looks like a complete short file. `cancel` stops a download nobody waits
for any more. Writes go straight into the file (after the download completed, or after a truncate to 0, which
makes the spool complete without any download). The owner (an `OpenFile`) calls `close` to delete the file.
While the download runs it is on the mount's `LiveTransfers` (what `guestfs-mount status` shows).

Before the first byte of a local change lands in a spool, `mark_dirty` writes a sidecar `<spool>.path` naming the
guest path; `mark_clean` (after the upload) and `close` remove it. A spool file left behind by a dead process
(SIGKILL, crash) with a sidecar may hold the only copy of written bytes: leftovers.py moves it to the recovery
directory at the next start; one without a sidecar was only a download copy.

A spool whose content is whole and clean can be given up instead of deleted (`surrender`): the content cache
(contentcache.py) moves the file in, without a copy.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

import pyfuse3
import trio

from guestfs_mount.fs.readbuffer import RecentBytes
from guestfs_mount.fs.status import LiveTransfer
from guestfs_mount.vsphere.faults import VSphereError
from guestfs_mount.vsphere.guestfiles import ReadTransfer

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# opens a transfer, and puts it on the registry of live transfers: the caller binds VM, credentials and guest path
Opener = Callable[[], Awaitable[tuple[ReadTransfer, LiveTransfer]]]
# called once when a download learns the file's size (and maybe its record)
OnInfo = Callable[[ReadTransfer], None]
# called when a download fails: what it told `OnInfo` is not to be trusted
OnFailure = Callable[[], None]


class DownloadFailed(Exception):
    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


class Spool:
    def __init__(self, spool_dir: Path, label: str = "") -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        while True:
            self.path = spool_dir / f"{os.getpid()}-{next(_ids)}.spool"
            try:
                # O_EXCL: a leftover of an earlier process that had our pid (a restarted container) may hold
                # unsaved bytes; it is never truncated, only skipped
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                continue
        self.sidecar = sidecar_path(self.path)
        self.marked: str | None = None  # the guest path the sidecar names (None: no sidecar)
        self.label = label
        self.have = 0  # bytes downloaded so far (a prefix of the file)
        self.complete = False  # the whole file is here (downloaded, or made locally)
        self.started = False
        self.error: DownloadFailed | None = None
        self._progress = trio.Event()
        self._scope: trio.CancelScope | None = None
        self.recent: RecentBytes | None = None  # the running download's last bytes, in memory

    @classmethod
    def adopt(cls, spool_dir: Path, file: Path, label: str = "") -> "Spool":
        """A spool holding the whole content of `file`, which is moved (not copied) to the spool's own name."""
        spool = cls(spool_dir, label)
        os.replace(file, spool.path)  # onto the empty file we made O_EXCL: the name is ours
        os.close(spool.fd)
        spool.fd = os.open(spool.path, os.O_RDWR)
        spool.have = os.fstat(spool.fd).st_size
        spool.started = spool.complete = True
        return spool

    def surrender(self) -> Path | None:
        """Give the file up instead of deleting it, when it holds the whole file and no unsaved bytes: closed, and
        its path returned for the caller to move away (`close` then deletes nothing). None otherwise."""
        if not self.complete or self.marked is not None or self.fd < 0:
            return None
        os.close(self.fd)
        self.fd = -1
        return self.path

    # --- download ---------------------------------------------------------------------------------------
    def start_download(self, nursery: trio.Nursery, opener: Opener, on_info: OnInfo | None = None,
                       on_failure: OnFailure | None = None) -> None:
        if self.started or self.complete:
            return
        self.started = True
        self.error = None
        nursery.start_soon(self._download, opener, on_info, on_failure)

    async def _download(self, opener: Opener, on_info: OnInfo | None, on_failure: OnFailure | None) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                transfer, live = await opener()
                told = False

                def progress() -> None:  # bytes landed in the file (and the ring): wake the readers
                    nonlocal told
                    if scope.cancel_called:
                        return
                    if not told and transfer.size is not None:
                        told = True
                        if on_info is not None:
                            on_info(transfer)
                    self.have = recent.end
                    live.total = transfer.size
                    live.advance(self.have)
                    if transfer.size is not None and self.have >= transfer.size and recent.error is None:
                        # the last byte landed: the file is whole now, not once the thread has been joined (a
                        # reader that closes at once gives its copy to the content cache); nothing more may land,
                        # and reads come from the file, which writes may change from now on
                        recent.stop()
                        if self.recent is recent:
                            self.recent = None
                        self.complete = True
                    self._notify()

                with live:
                    async with transfer:
                        recent = self.recent = RecentBytes(self.fd, progress)
                        try:
                            await transfer.into(recent)
                        finally:
                            recent.stop()
                            self.recent = None
                        progress()  # the last bytes, whether or not their wake-up already ran
                        if recent.error is not None:
                            raise recent.error
                    if not told and on_info is not None and not scope.cancel_called:
                        on_info(transfer)
                    if not scope.cancel_called and transfer.size is not None and transfer.size != self.have:
                        raise DownloadFailed(errno.EIO, f"got {self.have} of {transfer.size} bytes")
                if not scope.cancel_called:
                    self.complete = True
            except DownloadFailed as e:
                self.error = e
            except VSphereError as e:
                self.error = DownloadFailed(e.errno, str(e))
            except OSError as e:  # the local disk (ENOSPC...)
                self.error = DownloadFailed(e.errno or errno.EIO, str(e))
            except Exception as e:  # a bug: log it, fail the readers, keep the mount
                log.exception("download of %s failed", self.label)
                self.error = DownloadFailed(errno.EIO, repr(e))
            finally:
                self._scope = None
                if self.error is not None:
                    log.warning("download of %s failed: %s", self.label, self.error)
                    if on_failure is not None:
                        on_failure()
                self._notify()
        if scope.cancelled_caught and not self.complete:
            self.error = DownloadFailed(errno.EINTR, "download cancelled")
            self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    @property
    def downloading(self) -> bool:
        return self._scope is not None

    def cancel(self) -> None:
        if self.recent is not None:
            self.recent.stop()  # its thread writes nothing more into the file
            self.recent = None
        if self._scope is not None:
            self._scope.cancel()

    async def wait_for(self, end: int) -> None:
        """Until bytes [0, end) are here or the file is complete; raises FUSEError when the download failed."""
        while not self.complete and self.have < end:
            if self.error is not None:
                raise pyfuse3.FUSEError(self.error.errno)
            if not self.started:
                raise pyfuse3.FUSEError(errno.EIO)  # nobody started it: a bug in the caller
            await self._progress.wait()

    async def wait_complete(self) -> None:
        while not self.complete:
            if self.error is not None:
                raise pyfuse3.FUSEError(self.error.errno)
            await self._progress.wait()

    # --- local data -------------------------------------------------------------------------------------
    def make_empty(self) -> None:
        """The file is now empty (O_TRUNC, create): no download needed."""
        self.cancel()
        os.ftruncate(self.fd, 0)
        self.complete = True
        self.error = None
        self._notify()

    def read(self, off: int, size: int) -> bytes:
        if self.recent is not None:  # a reader keeping up with the download: from memory
            data = self.recent.read(off, min(off + size, self.have))
            if data is not None:
                return data
        return os.pread(self.fd, size, off)

    def write(self, off: int, data: bytes) -> int:
        return os.pwrite(self.fd, data, off)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def disk_bytes(self) -> int:
        """Bytes the spool file takes on disk (0 once closed)."""
        return os.fstat(self.fd).st_blocks * 512 if self.fd >= 0 else 0

    # --- crash safety -----------------------------------------------------------------------------------
    def mark_dirty(self, guest_path: str) -> None:
        """Name the guest path of this spool's unsaved bytes in its sidecar (written anew only when it changes:
        the first change since the last upload, or a rename). A sidecar that cannot be written is logged and
        costs only the name after a crash: the spool is still moved to the recovery directory."""
        if self.marked == guest_path or self.fd < 0:
            return
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps({"path": guest_path}).encode() + b"\n")
            finally:
                os.close(fd)
            os.replace(tmp, self.sidecar)  # whole or absent, never half a name
            self.marked = guest_path
        except OSError as e:
            log.warning("spool %s: the guest path of its unsaved bytes could not be recorded: %s", self.path, e)

    def mark_clean(self) -> None:
        """The spool's bytes are on the guest (or kept in the recovery directory): a crash now loses nothing."""
        if self.marked is None:
            return
        self.marked = None
        try:
            self.sidecar.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.cancel()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        # after the spool: a sidecar without its spool is harmless (removed at the next start), the reverse
        # would make unsaved bytes look like a download copy
        self.marked = None
        try:
            self.sidecar.unlink()
        except FileNotFoundError:
            pass


def sidecar_path(spool_path: Path) -> Path:
    """`<pid>-<n>.spool.path`: the guest path of a dirty spool's bytes, for recovery after a crash."""
    return spool_path.with_name(spool_path.name + ".path")
