"""The content cache: copies of closed guest files on local disk, so a second `cat`/`grep`/`vim` of an unchanged
file costs no transfer.

An entry is a file `<spool_dir>/cache-<pid>/<n>` holding a guest file's whole content, kept under the file's mount
path with the guest record it is a copy of: its size and mtime (the `key`). It is valid while the guest's record,
as the mount knows it now (a listing or stat younger than attr_ttl), has the same size and mtime; an entry found
invalid is deleted. Entries come from
- a spool handed over when its file's last handle closes (`keep`: a rename, no copy): one filled by a complete
  download, or one whose bytes this mount has just uploaded (the guest then holds exactly them);
- a prefetch (prefetch.py: `part` to fill, then `add`).
A file opened again takes its entry back as its spool (`take`: a rename again); it returns at the next close.

The cache holds at most `max_bytes` (least recently used out first); a file larger than that is not kept. Our own
changes move or drop entries (`rename`, `drop_tree`, `retime`), as they do the metadata cache's records.

Never stale by a change the guest reports: a copy is keyed by the record taken before its bytes were read, so a
change made after that shows as another mtime or size. A change within the same second that keeps the size
cannot show, so a download of a file whose mtime is within `RACY_S` of the download's start is not kept (as git
treats "racily clean" files); an upload of ours is (we set its mtime).

Crash safety: the directory holds only copies of what the guest has, never unsaved bytes (a spool is handed over
only when clean, and taken back as an ordinary spool with no sidecar); leftovers.py deletes the cache directories
of processes that are gone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from guestfs_mount.fs.inodes import is_under
from guestfs_mount.vsphere.model import GuestFileInfo

log = logging.getLogger(__name__)

# a download is not kept when the file's mtime is this close to (or after) the download's start: a second change
# within that same second would keep size and mtime, and go unseen (1 s of it for clock skew between guest and us)
RACY_S = 2.0

Key = tuple[int, float]  # (size, mtime) of the guest record a copy is of


def key_of(info: GuestFileInfo | None) -> Key | None:
    if info is None or info.mtime is None:
        return None
    return info.size, float(info.mtime)


def download_key(info: GuestFileInfo | None, started: float) -> Key | None:
    """The key of a download of `info`'s file begun at `started` (time.time()), or None when it cannot be kept."""
    key = key_of(info)
    if key is None or key[1] > started - RACY_S:
        return None
    return key


@dataclass
class Entry:
    file: Path
    key: Key
    size: int


class ContentCache:
    def __init__(self, spool_dir: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dir = cache_dir(spool_dir, os.getpid())
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # mount path -> entry, least recently used first
        self._names = 0
        self.bytes = 0
        self.hits = self.misses = self.evicted = 0
        self.enabled = max_bytes > 0
        self._made = False  # the directory is made at the first copy (leftovers.py removed any of our pid's)

    # --- lookups ----------------------------------------------------------------------------------------
    def holds(self, path: str) -> bool:
        return path in self._entries

    def valid(self, path: str, info: GuestFileInfo | None) -> bool:
        """Whether `path` has an entry that is a copy of the file as `info` describes it; an invalid one goes."""
        entry = self._entries.get(path)
        if entry is None:
            return False
        key = key_of(info)
        if key == entry.key:
            return True
        if key is not None:  # a record without mtime (a REST listing's) cannot tell
            self._drop(path)
        return False

    def take(self, path: str, info: GuestFileInfo | None) -> tuple[Path, Key] | None:
        """The entry's file and key for an open of `path` whose record is `info`, out of the cache (the caller
        owns the file now); None when there is no valid entry."""
        if not self.valid(path, info):
            if self.enabled:
                self.misses += 1
            return None
        entry = self._entries.pop(path)
        self.bytes -= entry.size
        self.hits += 1
        return entry.file, entry.key

    # --- filling ----------------------------------------------------------------------------------------
    def _directory(self) -> Path:
        if not self._made:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made = True
        return self.dir

    def part(self) -> Path:
        """A new file name in the cache directory for a prefetch to fill (deleted by `add` or by the caller)."""
        self._names += 1
        return self._directory() / f"{self._names}.part"

    def add(self, path: str, file: Path, key: Key) -> bool:
        """Move `file` (a complete copy of `path` as `key` describes it) into the cache; False when it does not
        fit (the file is deleted then)."""
        size = os.stat(file).st_size
        if not self.enabled or size > self.max_bytes or size != key[0]:
            _unlink(file)
            return False
        self._drop(path)
        self._names += 1
        dest = self._directory() / str(self._names)
        os.replace(file, dest)
        self._entries[path] = Entry(dest, key, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = next(iter(self._entries.items()))
            self._drop(old)
            self.evicted += 1
        return True

    # --- our own changes --------------------------------------------------------------------------------
    def rename(self, old: str, new: str, tree: bool = False) -> None:
        """`old` (a file; with `tree`, a directory and all below it) is now `new`; what was at `new` is gone."""
        if not tree:
            self._drop(new)
            entry = self._entries.pop(old, None)
            if entry is not None:
                self._entries[new] = entry
            return
        self.drop_tree(new)
        for path in [p for p in self._entries if is_under(p, old)]:
            self._entries[new + path[len(old):]] = self._entries.pop(path)

    def drop(self, path: str) -> None:
        """A file we deleted (one dictionary lookup: an rsync run deletes and renames thousands)."""
        self._drop(path)

    def drop_tree(self, path: str) -> None:
        for p in [p for p in self._entries if is_under(p, path)]:
            self._drop(p)

    def retime(self, path: str, old_mtime: float | None, mtime: float) -> None:
        """We set `path`'s mtime (its content unchanged): an entry of its old record is one of the new."""
        entry = self._entries.get(path)
        if entry is not None:
            if old_mtime is not None and entry.key[1] == old_mtime:
                entry.key = (entry.key[0], float(mtime))
            else:
                self._drop(path)

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.bytes -= entry.size
            _unlink(entry.file)

    def figures(self) -> dict[str, int]:
        return {"content_cached_files": len(self._entries), "content_cached_bytes": self.bytes,
                "content_cache_hits": self.hits, "content_cache_misses": self.misses,
                "content_cache_evicted": self.evicted}

    def close(self) -> None:
        """At unmount: the copies go with the process (a new mount cannot know whether they are still valid)."""
        self._entries.clear()
        self.bytes = 0
        if self._made:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._made = False


def cache_dir(spool_dir: Path, pid: int) -> Path:
    return spool_dir / f"cache-{pid}"


def _unlink(file: Path) -> None:
    try:
        os.unlink(file)
    except FileNotFoundError:
        pass
