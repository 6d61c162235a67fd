"""The last few MiB of a running download, in memory: readers that keep up with it are served from here, without
reading back what was just written to the spool file, and a large file read straight through never touches it.

A `RecentBytes` is the `Sink` of one download (guestfiles.py): the transfer's thread receives straight into its
ring buffer and counts each piece as landed. Whether it also writes each piece to the spool file at its offset
(*files* it) is decided at the first byte, when the size is known (`wants_file`): a file the content cache will keep,
or one opened for writing, is filed whole, on the download's thread, not the event loop; a larger file read
through is not. `file_from_now` turns filing on later (a reader went back behind the ring, a writer opened the
file): what the ring still holds is written at once, and `filed_from` says where the file's copy begins; the bytes
before that take a second transfer (spool.py). `limit` ends a download once that many bytes have landed.
The event loop learns "bytes up to N are there" through `on_progress` (run in trio's thread, at most one call
queued at a time).

A streamed download keeps pace with its readers (`begin_read`/`end_read` say where they are): the thread never
receives over bytes from `wanted` on, the lowest offset of the reads in progress and of the last one served; it
waits for room instead, and TCP holds the sender back. So a streamed range can be lent to pyfuse3 (a view of the
ring, no copy): nothing receives over it before the next read has ended. A reader idle for IDLE seconds is not
waited for: the thread files what the ring holds and every byte after, so the reader loses nothing.

A filed download does not wait for its readers: they copy out of the ring while the thread may be receiving into
it, and a range is taken only if it is still in the ring after the copy (the thread moves `start` past a slot
before it receives into it), so a reader never returns bytes of a later part of the file; whatever is not in the
ring any more is read from the spool file. `stop` (under the lock the thread holds while it writes) guarantees no
byte lands after it returns: the spool can then be truncated, written or closed.
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading
import time
from typing import Callable

import trio

from guestfs_mount.vsphere.guestfiles import Stopped

RING = 8 << 20  # bytes kept in memory per running download
SLOT = 1 << 20  # the most one receive asks for (the kernel hands over what it has, often less)
IDLE = 0.5  # seconds without a read after which a streamed download stops waiting for its reader and files the rest


def _files_all() -> bool:
    return True


class RecentBytes:
    def __init__(self, fd: int, on_progress: Callable[[], None], wants_file: Callable[[], bool] = _files_all,
                 ring: int = RING, slot: int = SLOT, limit: int | None = None):
        self._fd = fd
        self._wants_file = wants_file  # asked once, on the thread, before the first byte is counted
        self._decided = False
        # the spool file holds every landed byte from here on (None: streamed, it holds none of them); 0 until the
        # first byte, when nothing is missing yet
        self.filed_from: int | None = 0
        self._limit = limit
        # an anonymous mapping, not a bytearray: its pages cost memory only once bytes land in them, and go back to
        # the system when the last reference (the thread's slice included) is dropped, whatever malloc would keep
        self._ring = mmap.mmap(-1, ring)
        self._view = memoryview(self._ring)
        self._slot = slot
        self.start = 0  # file offset of the oldest byte still whole in the ring
        self.end = 0  # bytes landed: in the ring (the last `ring` of them) and in the spool file
        self._lock = threading.Lock()
        self._reader_moved = threading.Condition(self._lock)
        # a streamed download keeps the bytes from `wanted` on: the lowest offset of the reads in progress and of the
        # last one served (whose reply pyfuse3 may still be copying out of the ring: `read` lends, not copies)
        self.wanted = 0
        self._reads: dict[int, tuple[int, int]] = {}  # reads in progress: id -> (offset, end)
        self._read_ids = itertools.count()
        self._served = 0  # offset of the last read served
        self._last_read = time.monotonic()
        self._waits_for: tuple[int, int] | None = None  # while the thread waits: `wanted` for any room, for enough
        self._stopped = False
        self.error: OSError | None = None  # why the spool file took no more bytes
        self._token = trio.lowlevel.current_trio_token()
        self._on_progress = on_progress
        self._queued = False

    # --- the download's thread --------------------------------------------------------------------------
    def buffer(self) -> memoryview:
        size = len(self._ring)
        pos = self.end % size
        n = min(self._slot, size - pos)
        if self.filed_from is None:
            n = self._paced(n)
        # what that space held (the file's bytes one ring earlier) is gone from here on: readers take it from the file
        self.start = max(self.start, self.end + n - size)
        return self._view[pos:pos + n]

    def _paced(self, n: int) -> int:
        """How much of the next `n` bytes a streamed download may receive without dropping bytes a reader still
        needs (from `wanted` on): the thread waits for room rather than drop them (and TCP holds the sender back).
        A reader idle for IDLE seconds (`less`, a slow pipe) is not waited for: the download goes on at full speed
        and files the rest, so that nothing it has not had is lost; nor is one that waits for bytes further ahead
        than the ring reaches from the others' (a random read far ahead, mmap)."""
        size = len(self._ring)
        if self.wanted + size - self.end >= n:
            return n
        with self._lock:
            # woken once there is room for a quarter of the ring (several slots in a row), or when a reader waits for
            # new bytes
            self._waits_for = (self.end - size + 1, self.end - size + min(n, size // 4))
            try:
                while not self._stopped and self.filed_from is None:  # (a reader going back begins filing)
                    room = self.wanted + size - self.end
                    starving = self._starving()
                    if room >= min(n, size // 4) or (room > 0 and starving):
                        return min(n, room)
                    if starving or time.monotonic() - self._last_read > IDLE:
                        if not self._begin_filing():
                            raise Stopped()
                        return n
                    self._reader_moved.wait(IDLE / 5)
                return n  # filing from now on, or stopped (`filled` says so)
            finally:
                self._waits_for = None

    def filled(self, n: int) -> None:
        pos = self.end % len(self._ring)
        with self._lock:
            if self._stopped:
                raise Stopped()
            if not self._decided:
                self._decided = True
                if not self._wants_file():
                    self.filed_from = None
            if self._limit is not None:
                n = min(n, self._limit - self.end)
            if self.filed_from is not None and not self._file(pos, n, self.end):
                raise Stopped()
            self.end += n
        self._tell()
        if self._limit is not None and self.end >= self._limit:
            raise Stopped()  # all that was asked for: the transfer ends here

    def _file(self, pos: int, n: int, off: int) -> bool:
        """Ring bytes [pos, pos + n) to the spool file at `off` (under the lock); False when the disk refused."""
        try:
            written = os.pwrite(self._fd, self._view[pos:pos + n], off)
            while written < n:  # a short write (a signal): the rest
                written += os.pwrite(self._fd, self._view[pos + written:pos + n], off + written)
        except OSError as e:  # the local disk (ENOSPC...): the download ends, the spool reports it
            self.error = e
            return False
        return True

    def _tell(self) -> None:
        if not self._queued:
            self._queued = True
            try:
                self._token.run_sync_soon(self._progress)
            except trio.RunFinishedError:
                pass

    def _progress(self) -> None:  # in trio's thread
        self._queued = False
        if self._on_progress is not None:
            self._on_progress()

    def detach(self) -> None:
        """The download is over: drop the callbacks, which refer back to the spool and to this ring, so that the
        ring's memory goes back to the system as soon as the spool lets go of it, not at a garbage collection."""
        self._on_progress = None
        self._wants_file = _files_all

    # --- the event loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """No byte lands after this returns (the thread's next `filled` raises Stopped)."""
        with self._lock:
            self._stopped = True
            self._reader_moved.notify_all()

    def file_from_now(self) -> int:
        """File every byte from now on, and what the ring still holds at once; returns `filed_from`, the offset from
        which the spool file has (or will have, as they land) all of the download's bytes."""
        with self._lock:
            if not self._begin_filing():
                raise self.error
            return self.filed_from

    def _begin_filing(self) -> bool:
        """(Under the lock.) The ring's bytes to the file, and every byte from now on; False when the disk refused."""
        self._decided = True
        if self.filed_from is None:
            start, size = self.start, len(self._ring)
            while start < self.end:  # the ring's bytes, in at most two pieces (it wraps)
                pos = start % size
                n = min(self.end - start, size - pos)
                if not self._file(pos, n, start):
                    return False
                start += n
            # read after the writes: a slot the thread began receiving into meanwhile is not counted as filed
            self.filed_from = self.start
            self._reader_moved.notify_all()
        return True

    def begin_read(self, off: int, end: int) -> int:
        """A reader asks for bytes [off, end): a streamed download keeps them until `end_read`."""
        self._last_read = time.monotonic()
        read = next(self._read_ids)
        self._reads[read] = (off, end)
        self._moved(starving=end > self.end)
        return read

    def end_read(self, read: int) -> None:
        self._served = self._reads.pop(read, (self._served, 0))[0]
        self._moved(starving=False)

    def _starving(self) -> bool:
        """A read in progress waits for bytes not landed yet."""
        return any(end > self.end for _, end in list(self._reads.values()))

    def _moved(self, starving: bool) -> None:
        self.wanted = min(self._served, min((off for off, _ in list(self._reads.values())), default=self._served))
        waits = self._waits_for
        # the waiting thread is woken once the reader is well past, or at once when a reader waits for new bytes
        if waits is not None and (self.wanted >= waits[1] or starving):
            with self._lock:
                self._reader_moved.notify_all()

    def read(self, off: int, end: int) -> bytes | memoryview | None:
        """Bytes [off, end) when they are all still in the ring (`end` <= the bytes known landed), else None.

        A streamed download lends them: a view of the ring, which the thread does not receive into before the
        next read has ended (`wanted`), so pyfuse3 copies the reply straight from here. Otherwise a copy."""
        if off < self.start or end <= off:
            return None
        size = len(self._ring)
        a = off % size
        if end - off <= size - a:
            if self.filed_from is None and off >= self.wanted:
                view = self._view[a:a + end - off]
                return view if self.filed_from is None and off >= self.start else None
            data = bytes(self._view[a:a + end - off])
        else:  # wraps around the ring's end
            data = bytes(self._view[a:]) + bytes(self._view[:end - off - (size - a)])
        if off < self.start:  # the thread began receiving over part of it while we copied
            return None
        return data
