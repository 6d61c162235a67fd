"""Guest file operations over a VM's directory, with the guest agent's semantics; failures raise SimFault."""

from __future__ import annotations

import dataclasses
import ntpath
import os
import posixpath
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .faults import SimFault, from_oserror


@dataclass
class FileInfo:
    """One listing entry, dialect-neutral; `name` is the basename (or the full path for a single-file listing)."""

    name: str
    type: str  # "file" | "directory" | "symlink"
    size: int
    mode: int  # st_mode form
    uid: int
    gid: int
    mtime: float
    atime: float
    ctime: float
    symlink_target: str | None = None


@dataclass
class ListPage:
    """One page of a listing: the entries printed, the positions after the page, the positions in all."""

    entries: list[FileInfo]
    remaining: int
    total: int


@dataclass
class Attributes:
    """Attributes to set (None = leave as is); `mode` is chmod form."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: float | None = None
    atime: float | None = None
    hidden: bool | None = None
    read_only: bool | None = None


def attributes_from(values: dict, names: dict[str, str], parse_mode) -> Attributes:
    """Attributes from a request; `names` maps Attributes fields to the dialect's keys; times are ISO-8601 text."""
    got = {field: values.get(key) for field, key in names.items() if values.get(key) is not None}
    try:
        if "mode" in got:
            got["mode"] = parse_mode(got["mode"]) & 0o7777
        for when in ("mtime", "atime"):
            if when in got:
                got[when] = datetime.fromisoformat(got[when].replace("Z", "+00:00")).timestamp()
        return Attributes(**got)
    except (AttributeError, TypeError, ValueError) as err:
        raise SimFault("InvalidArgument", f"bad file attributes: {err}", invalidProperty="fileAttributes") from None


def info_from_stat(name: str, st: os.stat_result, symlink_target: str | None = None) -> FileInfo:
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    else:
        kind = "file"
    return FileInfo(
        name=name,
        type=kind,
        size=st.st_size if kind == "file" else 0,  # the agent fills size for regular files only
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=st.st_mtime,
        atime=st.st_atime,
        ctime=st.st_ctime,
        symlink_target=symlink_target,
    )


# A Linux guest's limits (PATH_MAX 4096 with its NUL, NAME_MAX 255), enforced here whatever the simulator's root
# adds on the host; the agent answers a path past them with FileNameTooLong.
LINUX_PATH_MAX = 4095
LINUX_NAME_MAX = 255


def check_linux_path_length(guest_path: str) -> None:
    raw = guest_path.encode("utf-8", "surrogatepass")
    if len(raw) > LINUX_PATH_MAX:
        raise SimFault("FileNameTooLong", f"path longer than {LINUX_PATH_MAX} bytes ({len(raw)})", file=guest_path)
    if any(len(part) > LINUX_NAME_MAX for part in raw.split(b"/")):
        raise SimFault("FileNameTooLong", f"a name in the path is longer than {LINUX_NAME_MAX} bytes", file=guest_path)


class GuestFS:
    """The guest file system of one VM: guest paths (POSIX, or `C:\\...` for Windows) map under `root`."""

    def __init__(self, root: Path, windows: bool = False):
        self.root = root
        self.windows = windows

    # ---- paths

    def host_path(self, guest_path: str) -> str:
        """Where a guest path lives on the host; `..` cannot climb above the guest's root."""
        if not isinstance(guest_path, str) or not guest_path:
            raise SimFault("InvalidArgument", "empty guest path", invalidProperty="path")
        if self.windows:
            m = re.match(r"^([A-Za-z]):(?:[\\/](.*))?$", guest_path, re.S)
            if not m:
                raise SimFault("InvalidArgument", f"not an absolute Windows path: {guest_path}", invalidProperty="path")
            rest = ntpath.normpath("\\" + (m.group(2) or "")).replace("\\", "/").lstrip("/")
            parts = [m.group(1).upper()] + ([rest] if rest and rest != "." else [])
            return os.path.join(self.root, *parts)
        if not guest_path.startswith("/"):
            raise SimFault("InvalidArgument", f"not an absolute path: {guest_path}", invalidProperty="path")
        check_linux_path_length(guest_path)
        rel = posixpath.normpath(guest_path).lstrip("/")
        return os.path.join(self.root, rel) if rel and rel != "." else str(self.root)

    def _lstat(self, guest_path: str, host: str) -> os.stat_result:
        try:
            return os.lstat(host)
        except OSError as err:
            raise from_oserror(err, guest_path) from None

    # ---- queries

    def list_files(self, guest_path: str, pattern: str | None) -> list[FileInfo]:
        """All entries the agent would list, before paging: `.` and `..` first for a directory, then directory order.

        A non-directory (a symlink is not followed) gives one entry named by the full path given.
        """
        names = self._listing(guest_path, pattern, dots=True)
        return [info for name, path in names if (info := self._entry(name, path, False)) is not None]

    def list_page(self, guest_path: str, pattern: str | None, index: int, count: int, *, dots: bool = True,
                  skip_unreadable: bool = False) -> "ListPage":
        """One page as the guest agent makes it (open-vm-tools vixTools.c, VixToolsListFiles): the pattern is
        applied first, then `count` positions from `index`; an entry whose size cannot be read is left out of the
        page but still counted, so `remaining` covers it and the next `index` the caller computes from the entries
        it got repeats entries. `count` 0 gives no entries and the right `remaining`."""
        names = self._listing(guest_path, pattern, dots)
        positions = names[index : index + count] if count > 0 else []
        entries = [info for name, path in positions if (info := self._entry(name, path, skip_unreadable)) is not None]
        return ListPage(entries, max(0, len(names) - index - len(positions)), len(names))

    def _listing(self, guest_path: str, pattern: str | None, dots: bool) -> list[tuple[str, str]]:
        """(name, host path) of every position of a listing, after the pattern."""
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error as err:
            raise SimFault("InvalidArgument", f"bad matchPattern: {err}", invalidProperty="matchPattern") from None
        host = self.host_path(guest_path)
        st = self._lstat(guest_path, host)
        if not stat.S_ISDIR(st.st_mode):
            return [(guest_path, host)]
        parent = os.path.dirname(host) if os.path.normpath(host) != os.path.normpath(self.root) else str(self.root)
        entries = [(".", host), ("..", parent)] if dots else []
        try:
            with os.scandir(host) as it:
                entries += [(e.name, e.path) for e in it]
        except OSError as err:
            raise from_oserror(err, guest_path) from None
        return [(name, path) for name, path in entries if regex is None or regex.search(name)]

    def _entry(self, name: str, path: str, skip_unreadable: bool) -> FileInfo | None:
        """An entry's record, or None where the agent prints nothing: a file gone since the directory was read,
        or (skip_unreadable) a regular file nobody may read, standing for one whose size the agent cannot get
        (locked on Windows, removed or made unreadable mid-listing)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if skip_unreadable and stat.S_ISREG(st.st_mode) and not st.st_mode & 0o444:
            return None
        return self._info(name, path, st)

    def _info(self, name: str, host: str, st: os.stat_result) -> FileInfo:
        if not stat.S_ISLNK(st.st_mode):
            return info_from_stat(name, st)
        try:
            target = os.readlink(host)
        except OSError:
            target = ""
        # the agent stat()s through a link: the target's attributes, all zeros for a dangling link
        followed = self._stat_through(host)
        info = info_from_stat(name, st, target)
        if followed is None:
            return dataclasses.replace(info, mode=0, uid=0, gid=0, mtime=0, atime=0, ctime=0)
        return dataclasses.replace(info, mode=followed.st_mode, uid=followed.st_uid, gid=followed.st_gid,
                                   mtime=followed.st_mtime, atime=followed.st_atime, ctime=followed.st_ctime)

    def _stat_through(self, host: str) -> os.stat_result | None:
        """stat() of a symlink as the guest sees it: absolute targets resolve inside the guest's root."""
        path = host
        for _ in range(40):  # the kernel's own limit on links followed
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return st
            try:
                target = os.readlink(path)
            except OSError:
                return None
            base = str(self.root) if target.startswith("/") else os.path.dirname(path)
            path = os.path.normpath(os.path.join(base, target.lstrip("/") if target.startswith("/") else target))
            if os.path.commonpath([path, str(self.root)]) != str(self.root):
                return None  # `..` above the guest's root: nothing there in the guest
        return None

    def stat(self, guest_path: str) -> FileInfo:
        host = self.host_path(guest_path)
        return self._info(guest_path, host, self._lstat(guest_path, host))

    def file_for_download(self, guest_path: str) -> tuple[str, FileInfo]:
        """A regular file to send: a directory is NotAFile, a symlink InvalidArgument (as the agent refuses it)."""
        host = self.host_path(guest_path)
        info = self._info(guest_path, host, self._lstat(guest_path, host))
        if info.type == "directory":
            raise SimFault("NotAFile", f"{guest_path} is a directory", file=guest_path)
        if info.type == "symlink":
            raise SimFault("InvalidArgument", f"{guest_path} is a symbolic link", invalidProperty="guestFilePath")
        return host, info

    def target_for_upload(self, guest_path: str, overwrite: bool) -> str:
        """Check an upload target at initiate time, as the agent does; returns the host path."""
        host = self.host_path(guest_path)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            parent = os.path.dirname(host)
            if not os.path.isdir(parent):
                raise SimFault("FileNotFound", f"parent of {guest_path} does not exist", file=guest_path) from None
            return host
        except OSError as err:
            raise from_oserror(err, guest_path) from None
        if stat.S_ISLNK(st.st_mode):
            raise SimFault("InvalidArgument", f"{guest_path} is a symbolic link", invalidProperty="guestFilePath")
        if stat.S_ISDIR(st.st_mode):
            raise SimFault("NotAFile", f"{guest_path} is a directory", file=guest_path)
        if not overwrite:
            raise SimFault("FileAlreadyExists", f"{guest_path} exists", file=guest_path)
        return host

    # ---- changes

    def make_directory(self, guest_path: str, parents: bool) -> None:
        host = self.host_path(guest_path)
        try:
            if parents:
                if os.path.lexists(host):
                    raise FileExistsError(17, "File exists")
                os.makedirs(host, mode=0o700)
            else:
                os.mkdir(host, 0o700)  # the agent creates directories 0700
        except OSError as err:
            raise from_oserror(err, guest_path) from None

    def delete_file(self, guest_path: str) -> None:
        host = self.host_path(guest_path)
        st = self._lstat(guest_path, host)
        if stat.S_ISDIR(st.st_mode):
            raise SimFault("NotAFile", f"{guest_path} is a directory", file=guest_path)
        try:
            os.unlink(host)
        except OSError as err:
            raise from_oserror(err, guest_path) from None

    def delete_directory(self, guest_path: str, recursive: bool) -> None:
        host = self.host_path(guest_path)
        st = self._lstat(guest_path, host)
        if not stat.S_ISDIR(st.st_mode):
            raise SimFault("NotADirectory", f"{guest_path} is not a directory", file=guest_path)
        if os.path.normpath(host) == os.path.normpath(self.root):
            raise SimFault("GuestPermissionDenied", "the guest root cannot be deleted")
        try:
            if recursive:
                shutil.rmtree(host)
            else:
                os.rmdir(host)
        except OSError as err:
            raise from_oserror(err, guest_path) from None

    def move_file(self, src: str, dst: str, overwrite: bool) -> None:
        hsrc, hdst = self.host_path(src), self.host_path(dst)
        st = self._lstat(src, hsrc)
        if stat.S_ISDIR(st.st_mode):
            raise SimFault("NotAFile", f"{src} is a directory", file=src)
        if os.path.lexists(hdst):
            if os.path.isdir(hdst) and not os.path.islink(hdst):
                raise SimFault("FileAlreadyExists", f"{dst} is a directory", file=dst)
            if not overwrite:
                raise SimFault("FileAlreadyExists", f"{dst} exists", file=dst)
        try:
            os.replace(hsrc, hdst)
        except OSError as err:
            raise from_oserror(err, dst) from None

    def move_directory(self, src: str, dst: str) -> None:
        hsrc, hdst = self.host_path(src), self.host_path(dst)
        st = self._lstat(src, hsrc)
        if not stat.S_ISDIR(st.st_mode):
            raise SimFault("NotADirectory", f"{src} is not a directory", file=src)
        if os.path.lexists(hdst):
            raise SimFault("FileAlreadyExists", f"{dst} exists", file=dst)
        try:
            os.rename(hsrc, hdst)
        except OSError as err:
            raise from_oserror(err, dst) from None

    def change_attributes(self, guest_path: str, attrs: Attributes) -> None:
        """Set what `attrs` sets; symlinks are followed, as the agent does."""
        host = self.host_path(guest_path)
        try:
            st = os.stat(host)
            apply_attributes(host, attrs, st)
        except OSError as err:
            raise from_oserror(err, guest_path) from None

    def create_temporary(self, prefix: str, suffix: str, directory: str | None, is_dir: bool) -> str:
        guest_dir = directory or ("C:\\Windows\\Temp" if self.windows else "/tmp")
        host_dir = self.host_path(guest_dir)
        if not directory:
            os.makedirs(host_dir, exist_ok=True)  # the guest's default temp dir always exists in a real guest
        try:
            if is_dir:
                made = tempfile.mkdtemp(suffix or "", prefix or "", host_dir)
            else:
                fd, made = tempfile.mkstemp(suffix or "", prefix or "", host_dir)
                os.close(fd)
        except OSError as err:
            raise from_oserror(err, guest_dir) from None
        name = os.path.basename(made)
        sep = "\\" if self.windows else "/"
        return guest_dir.rstrip("\\/") + sep + name


def apply_attributes(host: str, attrs: Attributes, st: os.stat_result | None = None) -> None:
    """chmod/chown/utime a host file by `attrs`; raises OSError."""
    st = st or os.stat(host)
    mode = attrs.mode
    if attrs.read_only is not None:
        mode = (mode if mode is not None else stat.S_IMODE(st.st_mode))
        mode = mode & ~0o222 if attrs.read_only else mode | 0o200
    if mode is not None:
        os.chmod(host, mode & 0o7777)
    if attrs.uid is not None or attrs.gid is not None:
        os.chown(host, -1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid)
    if attrs.mtime is not None or attrs.atime is not None:
        atime = attrs.atime if attrs.atime is not None else st.st_atime
        mtime = attrs.mtime if attrs.mtime is not None else st.st_mtime
        os.utime(host, (atime, mtime))
