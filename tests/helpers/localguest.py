"""A `GuestFiles` over a local directory (one subdirectory per VM), for testing the mount without HTTP.

For the unit tests of the FUSE operations, called in-process (integration tests use the real simulator and client).
`dialect="rest"` makes listings as thin as REST's (name, type, size only). Calls are counted in `calls` under the
VI method names the simulator uses (`ListFilesInGuest`, `guestFile.GET`, ...); `powered_off` holds VMs that fail
with EHOSTDOWN. Not the simulator: no sessions, no transfer URLs; just the semantics of guest file operations.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
from collections import Counter
from pathlib import Path

import trio

from guestfs_mount.vsphere.faults import GuestFileError, TransferError, VMUnavailableError
from guestfs_mount.vsphere.guestfiles import GuestFiles, ReadTransfer
from guestfs_mount.vsphere.model import FileType, GuestFileInfo, VMInfo


VI_NAMES = {
    "list_vms": "RetrievePropertiesEx", "list_dir": "ListFilesInGuest", "stat": "ListFilesInGuest",
    "open_read": "InitiateFileTransferFromGuest", "upload": "InitiateFileTransferToGuest",
    "mkdir": "MakeDirectoryInGuest", "remove_file": "DeleteFileInGuest", "remove_dir": "DeleteDirectoryInGuest",
    "move_file": "MoveFileInGuest", "move_dir": "MoveDirectoryInGuest", "set_attributes": "ChangeFileAttributesInGuest",
}


def _err(e: OSError, path: str) -> GuestFileError:
    return GuestFileError(str(e), errno=e.errno, path=path)


def _info(p: Path, name: str, thin: bool) -> GuestFileInfo:
    st = os.lstat(p)
    if stat_mod.S_ISDIR(st.st_mode):
        t = FileType.DIRECTORY
    elif stat_mod.S_ISLNK(st.st_mode):
        t = FileType.SYMLINK
    else:
        t = FileType.FILE
    size = st.st_size if t is FileType.FILE else 0
    if thin:
        return GuestFileInfo(name=name, type=t, size=size)
    return GuestFileInfo(name=name, type=t, size=size, permissions=stat_mod.S_IMODE(st.st_mode), uid=st.st_uid,
                         gid=st.st_gid, mtime=st.st_mtime, atime=st.st_atime,
                         symlink_target=os.readlink(p) if t is FileType.SYMLINK else None)


class LocalTransfer(ReadTransfer):
    def __init__(self, path: Path, chunk: int, delay: float):
        self.path = path
        self.size = path.stat().st_size
        self.info = None
        self._chunk = chunk
        self._delay = delay
        self.closed = False

    async def chunks(self):
        with open(self.path, "rb") as f:
            while data := f.read(self._chunk):
                if self._delay:
                    await trio.sleep(self._delay)
                else:
                    await trio.lowlevel.checkpoint()
                yield data

    async def aclose(self):
        self.closed = True


class LocalGuest(GuestFiles):
    def __init__(self, root: str | os.PathLike, dialect: str = "vi-json", chunk: int = 256 * 1024,
                 delay: float = 0.0):
        self.root = Path(root)
        self.dialect = dialect
        self.calls: Counter = Counter()
        self.powered_off: set[str] = set()
        self.chunk = chunk
        self.delay = delay

    def _enter(self, method: str, vm: str | None = None) -> None:
        op = VI_NAMES.get(method, method)
        self.calls[op] += 1
        if method in ("open_read", "upload"):
            self.calls["guestFile.GET" if method == "open_read" else "guestFile.PUT"] += 1
        if vm in self.powered_off:
            raise VMUnavailableError("powered off", vm=vm)

    def _p(self, vm: str, path: str) -> Path:
        return self.root / vm / path.lstrip("/")

    async def list_vms(self):
        self._enter("list_vms")
        return [VMInfo(id=d.name, name=d.name, power_state="poweredOff" if d.name in self.powered_off else "poweredOn",
                       guest_family="linuxGuest", tools_ready=d.name not in self.powered_off)
                for d in sorted(self.root.iterdir()) if d.is_dir()]

    async def list_dir(self, vm, creds, path):
        self._enter("list_dir", vm)
        p = self._p(vm, path)
        try:
            names = sorted(os.listdir(p))
        except OSError as e:
            raise _err(e, path) from None
        for name in names:
            try:
                yield _info(p / name, name, self.dialect == "rest")
            except FileNotFoundError:
                continue

    async def stat(self, vm, creds, path):
        self._enter("stat", vm)
        p = self._p(vm, path)
        try:
            return _info(p, p.name, False)
        except OSError as e:
            raise _err(e, path) from None

    async def open_read(self, vm, creds, path):
        self._enter("open_read", vm)
        p = self._p(vm, path)
        if p.is_dir():
            raise GuestFileError("not a file", errno=errno.EISDIR, path=path)
        try:
            return LocalTransfer(p, self.chunk, self.delay)
        except OSError as e:
            raise _err(e, path) from None

    async def upload(self, vm, creds, path, source, size, attrs=None, overwrite=True, progress=None):
        self._enter("upload", vm)
        p = self._p(vm, path)
        if p.exists() and not overwrite:
            raise GuestFileError("exists", errno=errno.EEXIST, path=path)
        if p.is_dir():
            raise GuestFileError("is a directory", errno=errno.EISDIR, path=path)
        if not p.parent.is_dir():
            raise GuestFileError("no parent", errno=errno.ENOENT, path=path)
        tmp = p.with_name(p.name + ".upload-tmp")
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        got = tmp.stat().st_size
        if got != size:
            tmp.unlink()
            raise TransferError(f"PUT of {size} bytes got {got}")
        os.replace(tmp, p)
        os.chmod(p, attrs.permissions if attrs and attrs.permissions is not None else 0o644)

    async def mkdir(self, vm, creds, path, parents=False):
        self._enter("mkdir", vm)
        try:
            os.makedirs(self._p(vm, path), mode=0o700, exist_ok=False) if parents else os.mkdir(self._p(vm, path), 0o700)
        except OSError as e:
            raise _err(e, path) from None

    async def remove_file(self, vm, creds, path):
        self._enter("remove_file", vm)
        p = self._p(vm, path)
        if p.is_dir() and not p.is_symlink():
            raise GuestFileError("not a file", errno=errno.EISDIR, path=path)
        try:
            os.unlink(p)
        except OSError as e:
            raise _err(e, path) from None

    async def remove_dir(self, vm, creds, path, recursive=False):
        self._enter("remove_dir", vm)
        try:
            shutil.rmtree(self._p(vm, path)) if recursive else os.rmdir(self._p(vm, path))
        except OSError as e:
            raise _err(e, path) from None

    async def move_file(self, vm, creds, src, dst, overwrite=False):
        self._enter("move_file", vm)
        s, d = self._p(vm, src), self._p(vm, dst)
        if s.is_dir():
            raise GuestFileError("not a file", errno=errno.EISDIR, path=src)
        if d.exists() and (not overwrite or d.is_dir()):
            raise GuestFileError("exists", errno=errno.EEXIST, path=dst)
        try:
            os.replace(s, d)
        except OSError as e:
            raise _err(e, src) from None

    async def move_dir(self, vm, creds, src, dst):
        self._enter("move_dir", vm)
        s, d = self._p(vm, src), self._p(vm, dst)
        if d.exists():
            raise GuestFileError("exists", errno=errno.EEXIST, path=dst)
        if not s.is_dir():
            raise GuestFileError("not a dir", errno=errno.ENOTDIR, path=src)
        try:
            os.rename(s, d)
        except OSError as e:
            raise _err(e, src) from None

    async def set_attributes(self, vm, creds, path, attrs):
        self._enter("set_attributes", vm)
        p = self._p(vm, path)
        try:
            if attrs.permissions is not None:
                os.chmod(p, attrs.permissions)
            if attrs.uid is not None or attrs.gid is not None:
                os.chown(p, -1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid)
            if attrs.mtime is not None or attrs.atime is not None:
                st = os.stat(p)
                os.utime(p, (attrs.atime if attrs.atime is not None else st.st_atime,
                             attrs.mtime if attrs.mtime is not None else st.st_mtime))
        except OSError as e:
            raise _err(e, path) from None

    async def make_temp(self, vm, creds, prefix="", suffix="", directory=None, is_dir=False):
        raise NotImplementedError

    async def aclose(self):
        pass
