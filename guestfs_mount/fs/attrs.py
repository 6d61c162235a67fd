"""GuestFileInfo -> pyfuse3.EntryAttributes, in one place, with the kernel's timeouts in step with our cache."""

from __future__ import annotations

import math
import os
import stat
import time

import pyfuse3

from guestfs_mount.fs.metacache import is_complete
from guestfs_mount.vsphere.model import FileType, GuestFileInfo

_TYPE_BITS = {FileType.FILE: stat.S_IFREG, FileType.DIRECTORY: stat.S_IFDIR, FileType.SYMLINK: stat.S_IFLNK}
_DEFAULT_PERMS = {FileType.FILE: 0o644, FileType.DIRECTORY: 0o755, FileType.SYMLINK: 0o777}
_START = time.time()


def guest_time(t: float) -> float:
    """Times as the guest keeps them (guest operations carry whole seconds), so what we show before the guest's
    own records arrive is what they will say."""
    return float(math.floor(t))


def _ns(t: float | None) -> int:
    return int(round((t if t is not None else _START) * 1e9))


def entry_attributes(inode: int, info: GuestFileInfo, ttl: float) -> pyfuse3.EntryAttributes:
    """The kernel's view of one record. An incomplete record (a REST listing entry) gets attr_timeout 0, so the
    kernel asks getattr, which then fetches the full record, only when a program wants the attributes."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = inode
    a.generation = 0
    perms = info.permissions if info.permissions is not None else _DEFAULT_PERMS[info.type]
    a.st_mode = _TYPE_BITS[info.type] | (perms & 0o7777)
    a.st_nlink = 2 if info.type is FileType.DIRECTORY else 1
    if info.type is FileType.SYMLINK:
        a.st_size = len(os.fsencode(info.symlink_target or ""))
    elif info.type is FileType.FILE:
        a.st_size = info.size
    else:
        a.st_size = 4096
    a.st_uid = info.uid if info.uid is not None else os.getuid()
    a.st_gid = info.gid if info.gid is not None else os.getgid()
    a.st_mtime_ns = _ns(info.mtime)
    a.st_ctime_ns = a.st_mtime_ns
    a.st_atime_ns = _ns(info.atime if info.atime is not None else info.mtime)
    a.st_blksize = 1 << 20  # cp, cat and dd size their buffers by it: fewer, bigger FUSE requests
    a.st_blocks = (a.st_size + 511) // 512
    a.entry_timeout = ttl
    a.attr_timeout = ttl if is_complete(info) else 0
    return a


def directory(name: str, mtime: float | None = None) -> GuestFileInfo:
    """A directory that exists only in the mount (the root, a VM, a Windows drive)."""
    return GuestFileInfo(name=name, type=FileType.DIRECTORY, permissions=0o755, uid=os.getuid(), gid=os.getgid(),
                         mtime=mtime if mtime is not None else _START)
