"""The data the client hands to its callers: VMs, guest file records, attributes to set, guest credentials.

These types are the contract between the vSphere client and the FUSE side; both dialects fill them the same way.
Times are POSIX seconds (float, UTC); permission bits are chmod(2) form (0o7777 at most), never st_mode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FileType(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class VMInfo:
    """One VM as vCenter lists it. `id` is the VI moref value (`vm-42`), which is also the REST `vm` id."""

    id: str
    name: str
    power_state: str  # "poweredOn" | "poweredOff" | "suspended"
    guest_family: str | None = None  # "linuxGuest" | "windowsGuest" | ... ; None when Tools never reported it
    tools_ready: bool = False  # guest.guestOperationsReady
    host: str | None = None  # HostSystem moref value of runtime.host, when the dialect tells

    @property
    def powered_on(self) -> bool:
        return self.power_state == "poweredOn"

    @property
    def is_windows(self) -> bool:
        return (self.guest_family or "").lower().startswith("windows")


@dataclass(frozen=True)
class GuestFileInfo:
    """One file, directory or symlink in a guest.

    `name` is the entry's basename in a listing, and the last component of the path for `stat`. Fields the
    dialect does not report are None (REST listings carry only name, type and size).
    """

    name: str
    type: FileType
    size: int = 0
    permissions: int | None = None  # chmod bits, e.g. 0o644
    uid: int | None = None
    gid: int | None = None
    mtime: float | None = None
    atime: float | None = None
    symlink_target: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type is FileType.DIRECTORY


@dataclass(frozen=True)
class FileAttributes:
    """Attributes to set on a guest file (ChangeFileAttributesInGuest / files?action=update, or on upload).
    None leaves that attribute as it is."""

    permissions: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: float | None = None
    atime: float | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.permissions, self.uid, self.gid, self.mtime, self.atime))


@dataclass(frozen=True)
class GuestCredentials:
    """A guest login, chosen by the caller per VM. The secret never shows in repr() or logs."""

    username: str
    password: str | None = field(default=None, repr=False)
    saml_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GuestProgram:
    """A program to start in a guest (StartProgramInGuest's GuestProgramSpec, REST `guest/processes` CreateSpec).

    On Linux the guest agent runs `bash -c '"<path>" <arguments>'` (/bin/sh without bash; open-vm-tools
    procMgrPosix.c), so `arguments` is shell text in the guest: build it with `guestprograms.program()`, which keeps
    every caller-given word out of it. `env`, when given, is the program's whole environment, not an addition."""

    path: str  # absolute path of the program in the guest
    arguments: str = ""
    env: dict[str, str] | None = None
    working_directory: str | None = None


@dataclass(frozen=True)
class GuestProcess:
    """A process the guest agent reports (ListProcessesInGuest's GuestProcessInfo, REST `processes/{pid}` Info).
    `end_time` (POSIX seconds) is set once a program started through the API has ended, and only then is
    `exit_code` its exit code (the agent may report 0 while it runs)."""

    pid: int
    exit_code: int | None = None
    end_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.end_time is not None
