"""One spare spool file, kept a short while after its last close for the next file written anew.

A spool written anew takes fresh page cache for every byte; the spool of the file before, deleted a moment
earlier, gave as much back. Where memory is fresh to the host (a VM whose balloon reports free pages, the kernel
then faults each page in again) that costs 10-20 times the copy itself: 2.4-2.7 s per GiB against 0.13-0.16 for
bytes written over pages the file already has (docs/performance.md, "Spare spool"). So the last spool that held
only bytes the guest has (uploaded, or a download copy) is kept, not deleted, and the next spool made empty (a
create, an O_TRUNC) is that file: its writes land on pages the kernel holds. `Spool` keeps the file's own length
apart from the stale bytes past it (spool.py); nothing past that length is ever read, sent or recovered.

At most one spare, between `SPARE_MIN` and `SPARE_MAX` bytes, and only while the spool directory's filesystem has
`ROOM` times its size free besides (the space it holds is not there for another spool's download meanwhile); it is
deleted when `SPARE_IDLE` seconds pass without a taker (before the kernel's writeback would write its dirty pages to
disk, at 30 s), and at unmount. Its name (`<pid>-0.spool`, no sidecar) is a download copy's: a crash leaves nothing
leftovers.py would keep."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import trio

log = logging.getLogger(__name__)

SPARE_MIN = 8 << 20  # smaller files cost too little page cache to be worth keeping
SPARE_MAX = 4 << 30
SPARE_IDLE = 15.0  # seconds
ROOM = 4


class Spares:
    def __init__(self, spool_dir: Path, idle: float = SPARE_IDLE) -> None:
        self.path = spool_dir / f"{os.getpid()}-0.spool"
        self.idle = idle
        self.size = 0  # of the spare held (0: none)
        self._since = 0.0
        self.taken = 0  # spools that took a spare (for `status` and tests)

    def give(self, file: Path, size: int) -> bool:
        """Keep `file` (a closed spool, `size` bytes, holding nothing unsaved) as the spare instead of deleting
        it; False when it is not kept (the caller deletes it)."""
        if self.size or not SPARE_MIN <= size <= SPARE_MAX:
            return False
        try:
            disk = os.statvfs(file)
            if disk.f_bavail * disk.f_frsize < ROOM * size:
                return False
            os.replace(file, self.path)
        except OSError as e:
            log.debug("spool %s not kept as the spare: %s", file, e)
            return False
        self.size, self._since = size, time.monotonic()
        return True

    def take(self, dest: Path) -> int:
        """Move the spare onto `dest` (an empty spool's own name); its size in bytes, or 0 when there is none."""
        size, self.size = self.size, 0
        if not size:
            return 0
        try:
            os.replace(self.path, dest)
        except OSError as e:
            log.debug("spare spool not taken: %s", e)
            return 0
        self.taken += 1
        return size

    def drop(self) -> None:
        if self.size:
            self.size = 0
            self.path.unlink(missing_ok=True)

    async def run(self) -> None:
        """Delete a spare nobody took within `idle` seconds (in the mount's nursery until unmount)."""
        while True:
            await trio.sleep(self.idle / 3)
            if self.size and time.monotonic() - self._since >= self.idle:
                self.drop()
