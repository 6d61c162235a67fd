"""The last few MiB of a running download, in memory: readers that keep up with it are served from here, without
reading back what was just written to the spool file.

A `RecentBytes` is the `Sink` of one download (guestfiles.py): the transfer's thread receives straight into its
ring buffer, writes each piece to the spool file at its offset (the whole file is still there, for random
access, re-reads and the content cache, written on the download's thread, not the event loop) and only then counts
it as landed. The event loop learns "bytes up to N are there" through `on_progress` (run in trio's thread, at most
one call queued at a time).

Readers on the event loop copy out of the ring while the thread may be receiving into it: a range is taken only if
it is still in the ring after the copy (the thread moves `start` past a slot before it receives into it), so a
reader never returns bytes of a later part of the file; whatever is not in the ring any more is read from the
spool file. `stop` (under the lock the thread holds while it writes) guarantees no byte lands after it returns:
the spool can then be truncated, written or closed.
"""

from __future__ import annotations

import mmap
import os
import threading
from typing import Callable

import trio

from guestfs_mount.vsphere.guestfiles import Stopped

RING = 8 << 20  # bytes kept in memory per running download
SLOT = 1 << 20  # the most one receive asks for (the kernel hands over what it has, often less)


class RecentBytes:
    def __init__(self, fd: int, on_progress: Callable[[], None], ring: int = RING, slot: int = SLOT):
        self._fd = fd
        # an anonymous mapping, not a bytearray: its pages cost memory only once bytes land in them, and go back to
        # the system when the last reference (the thread's slice included) is dropped, whatever malloc would keep
        self._ring = mmap.mmap(-1, ring)
        self._view = memoryview(self._ring)
        self._slot = slot
        self.start = 0  # file offset of the oldest byte still whole in the ring
        self.end = 0  # bytes landed: in the ring (the last `ring` of them) and in the spool file
        self._lock = threading.Lock()
        self._stopped = False
        self.error: OSError | None = None  # why the spool file took no more bytes
        self._token = trio.lowlevel.current_trio_token()
        self._on_progress = on_progress
        self._queued = False

    # --- the download's thread --------------------------------------------------------------------------
    def buffer(self) -> memoryview:
        pos = self.end % len(self._ring)
        n = min(self._slot, len(self._ring) - pos)
        # what that space held (the file's bytes one ring earlier) is gone from here on: readers take it from the file
        self.start = max(self.start, self.end + n - len(self._ring))
        return self._view[pos:pos + n]

    def filled(self, n: int) -> None:
        pos = self.end % len(self._ring)
        with self._lock:
            if self._stopped:
                raise Stopped()
            try:
                written = os.pwrite(self._fd, self._view[pos:pos + n], self.end)
                while written < n:  # a short write (a signal): the rest
                    written += os.pwrite(self._fd, self._view[pos + written:pos + n], self.end + written)
            except OSError as e:  # the local disk (ENOSPC...): the download ends, the spool reports it
                self.error = e
                raise Stopped() from None
            self.end += n
        if not self._queued:
            self._queued = True
            try:
                self._token.run_sync_soon(self._progress)
            except trio.RunFinishedError:
                pass

    def _progress(self) -> None:  # in trio's thread
        self._queued = False
        self._on_progress()

    # --- the event loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """No byte lands after this returns (the thread's next `filled` raises Stopped)."""
        with self._lock:
            self._stopped = True

    def read(self, off: int, end: int) -> bytes | None:
        """Bytes [off, end) when they are all still in the ring (`end` <= the bytes known landed), else None."""
        if off < self.start or end <= off:
            return None
        size = len(self._ring)
        a = off % size
        if end - off <= size - a:
            data = bytes(self._view[a:a + end - off])
        else:  # wraps around the ring's end
            data = bytes(self._view[a:]) + bytes(self._view[:end - off - (size - a)])
        if off < self.start:  # the thread began receiving over part of it while we copied
            return None
        return data
