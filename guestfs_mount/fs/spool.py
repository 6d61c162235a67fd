"""Spool files: the local copy of one open guest file, on disk under `spool_dir`, never whole in memory.

A `Spool` is created empty (or `adopt`s a whole copy the content cache hands back: complete, no download).
`start_download` fills it from a guest GET in a background task (in the mount's
nursery) whose transfer receives on a thread of its own into a `RecentBytes` ring (readbuffer.py); readers wait
only until their byte range is there (`wait_for`) and take it from the ring while it is still there, else from
the file. A failed or short download fails every waiter with the error's errno; it never looks like a complete
short file. `cancel` stops a download nobody waits for any more.

Whether the file gets the bytes too is decided at the first byte: a file up to `file_limit` (what the content cache
would keep) or one a writer needs (`keep`) is written to the file as it lands; a larger one read straight through
is *streamed*, served from the ring alone, and costs no disk. When something needs the bytes a streamed download
has already dropped from the ring (a reader seeking back, a writer opening the file), the file takes every byte
from then on and a second transfer of the same guest file (`_backfill`) fills the part before: one more guest
call, and only then. The spool is `complete` when the file holds every byte; a streamed download that ended is
`landed` but not complete.

Writes go straight into the file (after the spool is complete, or after a truncate to 0, which makes it complete
without any download). A spool made empty takes the mount's spare spool file when there is one (spares.py): its
page cache is still there, so the writes land on pages the kernel holds. Such a spool has a `length` of its own,
short of the file's, and nothing past it is read or sent; anything that needs the file itself to be right (a write
past the length, a truncate, the content cache, the recovery directory) first cuts the file to it (`settle`), and
until then the sidecar records the length, updated at each write that extends it, so a crash recovers no stale
byte. The owner (an `OpenFile`) calls `close` to delete the file. While a download runs it is on
the mount's `LiveTransfers` (what `guestfs-mount status` shows).

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

from guestfs_mount.fs.readbuffer import RING, RecentBytes
from guestfs_mount.fs.spares import Spares
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
    def __init__(self, spool_dir: Path, label: str = "", file_limit: int | None = None, ring: int = RING,
                 spares: Spares | None = None) -> None:
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
        self.complete = False  # the whole file is in the spool file (downloaded, or made locally)
        self.landed = False  # the download got every byte (complete, or streamed: the file lacks some)
        self.started = False
        self.error: DownloadFailed | None = None
        self._progress = trio.Event()
        self._scope: trio.CancelScope | None = None
        self.recent: RecentBytes | None = None  # the download's last bytes, in memory (kept after a streamed one)
        self.file_limit = file_limit  # larger downloads are streamed (None: none is)
        self._ring = ring
        self.keep = False  # a writer needs the whole file: file every byte
        self._opener: Opener | None = None
        self._first: tuple[int | None, float | None] | None = None  # (size, mtime) the download announced
        self.filed_from = 0  # the file holds the download's bytes from here on (set when filing begins late)
        self.backfilled = 0  # bytes [0, backfilled) of a second transfer are in the file
        self._backfill_scope: trio.CancelScope | None = None
        self._backfilling = False
        self.backfill_error: DownloadFailed | None = None
        self._nursery: trio.Nursery | None = None
        self._spares = spares
        self.length: int | None = None  # the content's length while the file holds a spare's stale bytes past it
        self._sidecar_fd = -1  # open while the sidecar records `length`, which each write that extends it updates
        self._length_at = 0  # where in the sidecar the length's digits are

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
        if self.file_limit is not None and self.size() > self.file_limit:
            return None  # more than the cache keeps of a download: the spare, maybe, at close
        self.settle()
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
        self._opener, self._nursery = opener, nursery
        nursery.start_soon(self._download, opener, on_info, on_failure)

    def _wants_file(self, transfer: ReadTransfer) -> bool:
        """On the download's thread, at the first byte: is every byte written to the file? (A body of unknown
        length, compressed, is.)"""
        return self.keep or self.file_limit is None or transfer.size is None or transfer.size <= self.file_limit

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
                        self._first = (transfer.size, transfer.info.mtime if transfer.info is not None else None)
                        if on_info is not None:
                            on_info(transfer)
                    self.have = recent.end
                    live.total = transfer.size
                    live.advance(self.have)
                    if transfer.size is not None and self.have >= transfer.size and recent.error is None:
                        # the last byte landed: the file is whole now (when filed), not once the thread has been
                        # joined (a reader that closes at once gives its copy to the content cache); nothing more
                        # may land, and reads come from the file, which writes may change from now on
                        recent.stop()
                        self._landed()
                    self._notify()

                with live:
                    async with transfer:
                        recent = self.recent = RecentBytes(self.fd, progress, lambda: self._wants_file(transfer),
                                                            ring=self._ring)
                        try:
                            await transfer.into(recent)
                        finally:
                            recent.stop()
                            recent.detach()
                            if not self.landed and self.recent is recent:
                                self._drop_ring()
                        progress()  # the last bytes, whether or not their wake-up already ran
                        if recent.error is not None:
                            raise recent.error
                    if not told and on_info is not None and not scope.cancel_called:
                        on_info(transfer)
                    if not scope.cancel_called and transfer.size is not None and transfer.size != self.have:
                        raise DownloadFailed(errno.EIO, f"got {self.have} of {transfer.size} bytes")
                if not scope.cancel_called and not self.landed:
                    self._landed()  # a body of unknown length (compressed), now whole
            except Exception as e:
                self.error = _failure(e, f"download of {self.label}")
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

    def _landed(self) -> None:
        self.landed = True
        self._check_whole()

    def _filing_from(self) -> int | None:
        """Where the file's copy of the download begins (None: streamed, the file has none of it)."""
        return self.recent.filed_from if self.recent is not None else self.filed_from

    def _drop_ring(self) -> None:
        if self.recent is not None:
            self.filed_from = self.recent.filed_from
            self.recent = None

    def _check_whole(self) -> None:
        """The file holds every byte once the download landed, filed from `filed_from`, and the part before is
        backfilled: from then on reads come from the file, which writes may change (the ring is dropped)."""
        if not self.landed or self.complete:
            return
        filed = self._filing_from()
        if filed is None or self.backfilled < filed:
            return
        self._drop_ring()
        self.complete = True

    def _file_from_now(self) -> int:
        """Every byte of the download goes to the file from now on: returns the offset before which the file still
        lacks some (0: none)."""
        self.keep = True
        if self.complete:
            return 0
        if self.recent is not None:
            try:
                self.filed_from = self.recent.file_from_now()
            except OSError as e:  # the local disk (ENOSPC...)
                raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
            self._check_whole()
        elif self.filed_from is None:  # a streamed download that failed or was cancelled: its bytes are gone
            raise pyfuse3.FUSEError(self.error.errno if self.error is not None else errno.EIO)
        return self.filed_from

    # --- a second transfer, for the bytes a streamed download dropped ---------------------------------------
    async def _need_filed(self, end: int) -> None:
        """Until the file holds bytes [0, end) of what the download skipped filing; starts the backfill."""
        upto = self._file_from_now()
        if not self._backfilling and self.backfilled < upto and self.backfill_error is None:
            self._backfilling = True  # at once: the readers that come before the task starts join this one
            self._nursery.start_soon(self._backfill, upto)
        while self.backfilled < min(end, upto) and not self.complete:
            if self.backfill_error is not None:
                raise pyfuse3.FUSEError(self.backfill_error.errno)
            if self.error is not None:
                raise pyfuse3.FUSEError(self.error.errno)
            await self._progress.wait()

    async def _backfill(self, upto: int) -> None:
        """Bytes [0, upto) into the file from a new transfer of the same guest file (the first one's URL was single
        use); a file that changed on the guest since (another size or mtime) fails the readers that need it."""
        with trio.CancelScope() as scope:
            self._backfill_scope = scope
            try:
                transfer, live = await self._opener()
                with live:
                    async with transfer:
                        def progress() -> None:
                            if scope.cancel_called or self.backfill_error is not None:
                                return
                            changed = self._changed_since(transfer)
                            if changed is not None:  # nothing of it reaches a reader
                                filler.stop()
                                self.backfill_error = DownloadFailed(errno.EIO, changed)
                                self._notify()
                                return
                            self.backfilled = filler.end
                            live.total = upto
                            live.advance(self.backfilled)
                            self._check_whole()
                            self._notify()

                        filler = RecentBytes(self.fd, progress, ring=min(self._ring, 2 << 20), limit=upto)
                        try:
                            await transfer.into(filler)
                        finally:
                            filler.stop()
                            filler.detach()
                        if self.backfill_error is not None:
                            raise self.backfill_error
                        if filler.error is not None:
                            raise filler.error
                        if not scope.cancel_called:
                            progress()
                            if self.backfilled < upto:
                                raise DownloadFailed(errno.EIO, f"got {self.backfilled} of {upto} bytes again")
                log.info("%s: bytes 0-%d read again (one more transfer): a reader or writer needed them after the "
                         "last %d MiB kept in memory had moved past", self.label, upto, self._ring >> 20)
            except Exception as e:
                self.backfill_error = _failure(e, f"second download of {self.label}")
            finally:
                self._backfill_scope = None
                if self.backfill_error is not None:
                    log.warning("download of %s again (bytes the first one did not keep) failed: %s", self.label,
                                self.backfill_error)
                self._notify()

    def _changed_since(self, transfer: ReadTransfer) -> str | None:
        """Why the second transfer is not of the file the first one read (another size or mtime), or None."""
        first_size, first_mtime = self._first or (None, None)
        mtime = transfer.info.mtime if transfer.info is not None else None
        if ((transfer.size is not None and first_size is not None and transfer.size != first_size)
                or (mtime is not None and first_mtime is not None and mtime != first_mtime)):
            return (f"the file changed on the guest while it was being read (size {first_size} -> {transfer.size}, "
                    f"mtime {first_mtime} -> {mtime})")
        return None

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    @property
    def downloading(self) -> bool:
        return self._scope is not None

    def cancel(self) -> None:
        if self.recent is not None:
            self.recent.stop()  # its thread writes nothing more into the file
            self._drop_ring()
        if self._scope is not None:
            self._scope.cancel()
        if self._backfill_scope is not None:
            self._backfill_scope.cancel()

    async def wait_for(self, end: int) -> None:
        """Until bytes [0, end) have landed or the file is complete; raises FUSEError when the download failed."""
        while not self.complete and not self.landed and self.have < end:
            if self.error is not None:
                raise pyfuse3.FUSEError(self.error.errno)
            if not self.started:
                raise pyfuse3.FUSEError(errno.EIO)  # nobody started it: a bug in the caller
            await self._progress.wait()

    async def wait_complete(self) -> None:
        """Until the file holds every byte (a writer's need): a streamed download files the rest, and the part it
        dropped comes again."""
        while not self.complete:
            if self.error is not None:
                raise pyfuse3.FUSEError(self.error.errno)
            if self.started:
                await self._need_filed(1 << 62)
            if not self.complete:
                await self._progress.wait()

    # --- local data -------------------------------------------------------------------------------------
    def make_empty(self) -> None:
        """The file is now empty (O_TRUNC, create): no download needed."""
        self.cancel()
        if self.length is not None:
            self.length = 0  # already on a spare's pages: keep them
            self._record_length()
        elif self._spares is not None and os.fstat(self.fd).st_size == 0 and self._spares.take(self.path):
            os.close(self.fd)  # the empty file we made is gone, replaced by the spare
            self.fd = os.open(self.path, os.O_RDWR)
            self.length = 0
            if self.marked is not None:
                self._write_sidecar(self.marked)  # now with the length
        else:
            os.ftruncate(self.fd, 0)
        self.complete = True
        self.error = None
        self._notify()

    async def read(self, off: int, size: int) -> bytes:
        """Bytes [off, off + size) (fewer at the end of the file), once the download has them. A streamed download
        may lend a view of its ring: good until the next read ends, so copy it at once (pyfuse3's reply does)."""
        if self.complete:
            if self.length is not None:
                size = max(0, min(size, self.length - off))
            return os.pread(self.fd, size, off)
        recent = self.recent
        read = recent.begin_read(off, off + size) if recent is not None else None
        try:
            await self.wait_for(off + size)
            if not self.complete:
                end = min(off + size, self.have)
                if off >= end:
                    return b""
                if self.recent is not None:  # a reader keeping up with the download: from memory
                    data = self.recent.read(off, end)
                    if data is not None:
                        return data
                await self._need_filed(end)  # behind the ring: from the file, which may need the bytes again
            return os.pread(self.fd, size, off)
        finally:
            if read is not None:
                recent.end_read(read)

    def write(self, off: int, data: bytes) -> int:
        if self.length is not None and off > self.length:
            self.settle()  # the gap must read as zeros, not as the spare's bytes
        n = os.pwrite(self.fd, data, off)
        if self.length is not None and off + n > self.length:
            self.length = off + n
            self._record_length()  # after the bytes: a crash in between loses only a write not yet answered
        return n

    def truncate(self, size: int) -> None:
        self.settle()
        os.ftruncate(self.fd, size)

    def size(self) -> int:
        return self.length if self.length is not None else os.fstat(self.fd).st_size

    def settle(self) -> None:
        """Cut a spare's stale bytes: the file holds exactly the content from now on."""
        if self.length is None:
            return
        os.ftruncate(self.fd, self.length)
        self.length = None
        if self.marked is not None:
            self._write_sidecar(self.marked)  # without a length: it would cut what is written past it

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
        self._write_sidecar(guest_path)

    def _write_sidecar(self, guest_path: str) -> None:
        self._close_sidecar()
        record = json.dumps({"path": guest_path}).encode()
        if self.length is not None:  # a fixed-width field, rewritten in place as the content grows
            record = record[:-1] + b', "length": '
            self._length_at = len(record)
            record += b"%-20d}" % self.length
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, record + b"\n")
            finally:
                if self.length is None:
                    os.close(fd)
                else:
                    self._sidecar_fd = fd
            os.replace(tmp, self.sidecar)  # whole or absent, never half a name
            self.marked = guest_path
        except OSError as e:
            self._close_sidecar()
            log.warning("spool %s: the guest path of its unsaved bytes could not be recorded: %s", self.path, e)

    def _record_length(self) -> None:
        if self._sidecar_fd >= 0:
            os.pwrite(self._sidecar_fd, b"%-20d" % self.length, self._length_at)

    def _close_sidecar(self) -> None:
        if self._sidecar_fd >= 0:
            os.close(self._sidecar_fd)
            self._sidecar_fd = -1

    def mark_clean(self) -> None:
        """The spool's bytes are on the guest (or kept in the recovery directory): a crash now loses nothing."""
        if self.marked is None:
            return
        self.marked = None
        self._close_sidecar()
        try:
            self.sidecar.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.cancel()
        self._close_sidecar()
        kept = False
        if self.fd >= 0:
            size = os.fstat(self.fd).st_size  # the pages it holds, stale ones too
            os.close(self.fd)
            self.fd = -1
            if self._spares is not None and self.marked is None and self.complete:
                kept = self._spares.give(self.path, size)  # nothing unsaved: its pages serve the next writer
        if not kept:
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


def _failure(e: Exception, what: str) -> DownloadFailed:
    """What the readers of a failed download are told: the guest's errno, the local disk's (ENOSPC...), or EIO for
    anything else, which is a bug: logged with its traceback, the mount kept."""
    if isinstance(e, DownloadFailed):
        return e
    if isinstance(e, VSphereError):
        return DownloadFailed(e.errno, str(e))
    if isinstance(e, OSError):
        return DownloadFailed(e.errno or errno.EIO, str(e))
    log.exception("%s failed", what)
    return DownloadFailed(errno.EIO, repr(e))


def sidecar_path(spool_path: Path) -> Path:
    """`<pid>-<n>.spool.path`: the guest path of a dirty spool's bytes, for recovery after a crash."""
    return spool_path.with_name(spool_path.name + ".path")
