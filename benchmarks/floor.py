"""`python -m benchmarks.floor [--mib N] [--repeats N]`: what pyfuse3 itself costs per GiB on this machine, the floor
under the mount's `read_ratio`, `write_ratio` and CPU figures (docs/performance.md, "the floors").

A filesystem of one file on the same pyfuse3 and trio as the mount, doing no work of its own: `write` discards the
bytes (1 MiB requests, `direct_io`, as the mount's whole-file writes), `read` answers with one constant 1 MiB
`bytes` through the kernel's page cache (read-ahead 1 MiB, as the mount sets it). `dd bs=1M` writes and reads N MiB
through it; each line gives the wall time and the filesystem process's CPU (user + system) per GiB, with the page
cache of the file dropped before each read. Run as root (the read-ahead), like the benchmarks' other cases.
`python -m benchmarks.floor --serve MOUNTPOINT` is the filesystem alone."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyfuse3
import trio

from benchmarks.cases import cpu_times
from benchmarks.latency import drop_page_cache
from guestfs_mount.fs.mount import set_read_ahead

MiB = 1 << 20
FILE_INODE = pyfuse3.ROOT_INODE + 1
BLOCK = os.urandom(MiB)


class NullFS(pyfuse3.Operations):
    """/f: reads give `size` bytes of BLOCK over and over, writes are counted and dropped."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    async def getattr(self, inode, ctx=None):
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_mode = (stat.S_IFDIR | 0o755) if inode == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o644)
        attrs.st_size = self.size if inode == FILE_INODE else 0
        attrs.st_blksize = MiB  # as the mount: cp and dd size their buffers by it
        attrs.attr_timeout = attrs.entry_timeout = 60
        return attrs

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != b"f":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def open(self, inode, flags, ctx):
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        return pyfuse3.FileInfo(fh=inode, direct_io=writing)

    async def setattr(self, inode, attr, fields, fh, ctx):
        return await self.getattr(inode)

    async def read(self, fh, off, size):
        return BLOCK[:max(0, min(size, self.size - off))]

    async def write(self, fh, off, buf):
        return len(buf)


def serve(mountpoint: str, size: int) -> None:
    pyfuse3.init(NullFS(size), mountpoint, set(pyfuse3.default_options) | {"fsname=nullfs"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


def _cpu(pid: int) -> float:
    return sum(cpu_times(pid))


def measure(mib: int, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(wall s per GiB, filesystem CPU s per GiB) of each dd, by direction."""
    from tests.helpers.mounting import mounted  # the one way the benchmarks start a filesystem and stop it

    per_gib = 1024 / mib
    results: dict[str, list[tuple[float, float]]] = {"write": [], "read": []}
    with tempfile.TemporaryDirectory(prefix="guestfs-floor-") as tmp:
        mp = Path(tmp) / "mnt"
        argv = [sys.executable, "-m", "benchmarks.floor", "--serve", str(mp), "--mib", str(mib)]
        with mounted(argv, mp, log_path=Path(tmp) / "nullfs.log", cwd=Path(__file__).resolve().parents[1]) as proc:
            set_read_ahead(str(mp), 1024)  # as the mount does it (not root: the kernel's 128 KiB)
            for _ in range(repeats):
                for direction, args in (("write", ["if=/dev/zero", f"of={mp / 'f'}"]),
                                        ("read", [f"if={mp / 'f'}", "of=/dev/null"])):
                    if direction == "read":
                        drop_page_cache(mp / "f")  # this file's pages only, not the machine's
                    cpu, start = _cpu(proc.pid), time.perf_counter()
                    subprocess.run(["dd", *args, "bs=1M", f"count={mib}", "status=none"], check=True, timeout=600)
                    wall = time.perf_counter() - start
                    results[direction].append((round(wall * per_gib, 2), round((_cpu(proc.pid) - cpu) * per_gib, 2)))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="bytes each dd moves, in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", metavar="MOUNTPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.mib * MiB)
        return
    for direction, runs in measure(args.mib, args.repeats).items():
        walls = ", ".join(f"{w:.2f}" for w, _ in runs)
        cpus = ", ".join(f"{c:.2f}" for _, c in runs)
        print(f"pyfuse3 floor, {direction:5s}: wall {walls} s per GiB; filesystem CPU {cpus} s per GiB")


if __name__ == "__main__":
    main()
