"""Open file state: one `OpenFile` per inode with open handles (its spool, dirty state, attributes held until
the upload), and one `Handle` per open(2) (fh numbers given to the kernel).

An OpenFile lives from the first open of an inode to the release of its last handle; then its spool file is
deleted (a dirty one is uploaded first). `lock` orders the writes, truncates and uploads of one file.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import trio

from guestfs_mount.fs.inodes import UnknownReference
from guestfs_mount.fs.spool import Spool
from guestfs_mount.vsphere.model import GuestFileInfo


@dataclass
class OpenFile:
    inode: int
    spool: Spool
    info: GuestFileInfo | None  # the record when opened (None for a file we created)
    on_guest: bool = True  # False until the first upload of a file we created
    dirty: bool = False
    mtime: float | None = None  # time of the last local change (shown while dirty, set on the guest after upload)
    # chmod/chown/utimens on a dirty file, applied after the upload (an overwriting upload resets them)
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: float | None = None
    user_mtime: float | None = None
    handles: int = 0
    writers: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)
    # the guest record (size, mtime) the spool's bytes are a whole copy of, for the content cache at the last
    # close; None while they are not (a download not done or too recent, a local change not uploaded)
    content_key: tuple[int, float] | None = None
    upload_error: int | None = None  # errno of a write-back upload that failed for good: the next fsync's
    # handles writing past the kernel's page cache (FOPEN_DIRECT_IO): while there are any, other opens do too, so
    # that nobody reads a cached page those writes did not update
    direct_writers: int = 0


@dataclass
class Handle:
    fh: int
    inode: int
    file: OpenFile
    writable: bool
    append: bool
    flushed: bool = False  # flush came (its fd was closed) and no write since: the release alone is still due
    direct_writer: bool = False  # a writable handle opened with FOPEN_DIRECT_IO


@dataclass
class DirHandle:
    fh: int
    inode: int
    path: str
    entries: list[tuple[str, object]] | None = None  # (name, record) snapshot taken at the first readdir


class HandleTable:
    def __init__(self) -> None:
        self.files: dict[int, OpenFile] = {}
        self.handles: dict[int, Handle | DirHandle] = {}
        self._fh = itertools.count(1)

    def new_fh(self) -> int:
        return next(self._fh)

    def add(self, handle: Handle | DirHandle) -> None:
        self.handles[handle.fh] = handle

    def get(self, fh: int) -> Handle | DirHandle:
        handle = self.handles.get(fh)
        if handle is None:
            raise UnknownReference(f"file handle {fh}")
        return handle

    def pop(self, fh: int) -> Handle | DirHandle | None:
        return self.handles.pop(fh, None)

    def dirty_files(self) -> list[OpenFile]:
        return [f for f in self.files.values() if f.dirty]
