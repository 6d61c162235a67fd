"""The bytes a run moves: sizes per mode, the work directory on a real disk, source files made once per run of
the harness, and fresh guest names (hard links of a source) so that every read through the mount is of a file
the mount has never seen, hence never page-cached."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.rig import VM

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Sizes:
    read: int  # sequential read, write and time to first byte
    listing: int  # entries of the directory `ls -l` lists
    # REST listings lack attributes: `ls -l` stats each entry, one call at a time (10,000 x 50 ms is over 8 minutes,
    # twice), so a REST run with latency lists at most this many (its list_entries says how many)
    listing_rest_slow: int
    rsync_files: int  # 4 KiB files rsync copies
    rss: int  # the file copied in each direction while the mount's peak RSS is watched
    parallel: int  # each of the parallel files
    parallel_files: int = 8
    ttfb_samples: int = 5
    repeats: int = 2  # best of this many for each throughput
    cpr_files: int = 1000  # 4 KiB files `cp -r` copies out of the guest (latency suite)
    reread: int = 64 << 10  # the file read again, unchanged and changed (latency suite)
    cache_file: int = 128 * MiB  # files read while the content cache fills, and how many (latency suite)
    cache_files: int = 10


FULL = Sizes(read=GiB, listing=10_000, listing_rest_slow=1000, rsync_files=1000, rss=4 * GiB, parallel=128 * MiB,
             repeats=3)
QUICK = Sizes(read=64 * MiB, listing=2000, listing_rest_slow=200, rsync_files=200, rss=256 * MiB, parallel=8 * MiB,
              ttfb_samples=3, cpr_files=100, cache_file=32 * MiB, cache_files=3)
# the latency suite lists 1,000 entries in both dialects (issue #13's figures)
LATENCY = dataclasses.replace(FULL, listing=1000, listing_rest_slow=1000)
LATENCY_QUICK = dataclasses.replace(QUICK, listing=200, listing_rest_slow=200)
# an mtime well in the past for the files a run reads: the mount does not keep a copy of a file changed within the
# last second or so (another change in the same second would keep its size and mtime)
OLD = time.time() - 3600


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it in /proc/mounts)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[1].encode().decode("unicode_escape")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, fstype = point, fields[2]
    return fstype


def make_workdir(parent: str | None) -> Path:
    """A fresh directory for big files on a real disk: `parent` if given, else the system temp dir unless it is
    tmpfs (RAM: it would compete with the page cache and hide the disk), else /var/tmp."""
    if parent is None:
        candidates = [tempfile.gettempdir(), "/var/tmp"]
        parent = next((c for c in candidates if filesystem_of(Path(c)) not in ("tmpfs", "ramfs")), candidates[-1])
    return Path(tempfile.mkdtemp(prefix="guestfs-bench-", dir=parent))


def write_random(path: Path, size: int) -> None:
    """`size` bytes that do not compress (a 16 MiB random block, repeated), written once to disk."""
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        # on disk before any measurement: the kernel writing back gigabytes of fresh pages later would slow
        # whichever case runs first (it did: the first write case of a run measured at a third of the others)
        f.flush()
        os.fsync(f.fileno())
    os.utime(path, (OLD, OLD))


class Dataset:
    """Source files: `local(size)` is a file of that size outside the guest (what cp and PUT send);
    `guest_name(size, dir)` is a new hard link of it inside the VM (what reads fetch), named once.

    The mount trusts a directory listing for `dir_ttl` (a name missing from it is ENOENT), so files a case reads
    are stocked before the mount starts (`stock`) and handed out by `take`."""

    def __init__(self, workdir: Path, sim_root: Path):
        self.local_dir = workdir / "data"
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.vm_root = sim_root / VM
        self.vm_root.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._stock: dict[tuple[int, str], list[str]] = {}

    def local(self, size: int) -> Path:
        path = self.local_dir / f"blob-{size}"
        if not path.exists():
            write_random(path, size)
        return path

    def guest_name(self, size: int, directory: str) -> str:
        """A guest path (`/dir/f-N`) of a file never used before, holding `local(size)`'s bytes."""
        name = f"/{directory}/f-{next(self._counter)}"
        target = self.vm_root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.local(size), target)
        return name

    def stock(self, size: int, directory: str, count: int) -> None:
        self._stock.setdefault((size, directory), []).extend(self.guest_name(size, directory) for _ in range(count))

    def take(self, size: int, directory: str) -> str:
        names = self._stock.get((size, directory))
        if not names:
            raise RuntimeError(f"no fresh file of {size} bytes stocked in {directory} (see cases.stock)")
        return names.pop(0)

    def listing_dir(self, entries: int) -> str:
        """A guest directory of `entries` empty files (shared by the runs: each run's mount starts cold)."""
        name = f"list-{entries}"
        made_once(self.vm_root / name, lambda tmp: [(tmp / f"file-{i:05d}.txt").touch() for i in range(entries)])
        return f"/{name}"

    def stock_own(self, size: int, directory: str, text: bool = False) -> None:
        self._stock.setdefault((size, directory, text), []).append(self.own(size, directory, text))

    def take_own(self, size: int, directory: str, text: bool = False) -> str:
        names = self._stock.get((size, directory, text))
        if not names:
            raise RuntimeError(f"no file of its own of {size} bytes stocked in {directory} (see latency.stock)")
        return names.pop(0)

    def own(self, size: int, directory: str, text: bool = False) -> str:
        """A guest file of its own (not a hard link: a case may change it on the guest), `size` random bytes or
        lines of text, its mtime in the past."""
        name = f"/{directory}/own-{next(self._counter)}" + (".txt" if text else "")
        target = self.vm_root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if text:
            line = b"the quick brown fox jumps over the lazy dog\n"
            target.write_bytes((line * (size // len(line) + 1))[:size])
        else:
            target.write_bytes(os.urandom(size))
        os.utime(target, (OLD, OLD))
        return name

    def small_files_dir(self, files: int, tag: str = "") -> str:
        """A guest directory of `files` files of 4 KiB random bytes each (shared by the runs: each run's mount
        starts cold); another `tag`, another directory."""
        name = f"small-{files}" + (f"-{tag}" if tag else "")

        def fill(tmp: Path) -> None:
            for i in range(files):
                (tmp / f"f{i:05d}.dat").write_bytes(os.urandom(4096))
                os.utime(tmp / f"f{i:05d}.dat", (OLD, OLD))

        made_once(self.vm_root / name, fill)
        return f"/{name}"

    def rsync_source(self, files: int, modes: bool = False) -> Path:
        """A local directory of `files` files of 4 KiB each (`modes`: each with a mode and an mtime of its own)."""
        path = self.local_dir / (f"rsync-{files}" + ("-modes" if modes else ""))

        def fill(tmp: Path) -> None:
            for i in range(files):
                (tmp / f"f{i:04d}.dat").write_bytes(os.urandom(4096))
                if modes:
                    os.chmod(tmp / f"f{i:04d}.dat", 0o600 | (i % 8) << 3)
                    os.utime(tmp / f"f{i:04d}.dat", (OLD - i, OLD - i))

        made_once(path, fill)
        return path


def made_once(path: Path, fill) -> None:
    """A directory made by `fill(tmp)` in a temp name beside it, then renamed: whole or absent; kept if there."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    tmp.rename(path)
