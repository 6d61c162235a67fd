"""What the mount needs to know besides the client: cache lifetimes, mount options, where spool files live.

The command line and config file build one `MountSettings`; the FUSE side reads it and nothing else of config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from guestfs_mount.vsphere.model import GuestCredentials

# VM name -> the guest login to use for it, or None when no config table matches (the VM's directory gives
# EACCES; the lookup itself logs which table to add).
CredentialsLookup = Callable[[str], GuestCredentials | None]


def _never(vm_name: str) -> bool:
    return False


@dataclass(frozen=True)
class MountSettings:
    spool_dir: Path  # local spool files of open files (downloads and pending uploads)
    recovery_dir: Path  # failed uploads are kept here, never deleted by the program
    attr_ttl: float = 5.0  # seconds an attribute (or a negative lookup) is trusted, here and in the kernel
    dir_ttl: float = 5.0  # seconds a directory listing is trusted
    vm_list_ttl: float = 30.0  # seconds the top-level list of VMs is trusted
    read_only: bool = False
    allow_other: bool = False
    debug: bool = False
    only_vms: tuple[str, ...] = ()  # --vm NAME ...: show only these VMs (empty: all)
    windows_drives: tuple[str, ...] = ("C:",)  # what a Windows VM's directory holds
    fsname: str = "guestfs"
    fuse_options: tuple[str, ...] = ()  # extra -o options, passed to pyfuse3.init
    attr_delay: float = 1.0  # seconds a chmod/touch of a closed file may wait to share one guest call (0: never)
    read_ahead_kb: int = 1024  # the kernel's read-ahead for this mount (0: leave the kernel's 128 KiB)
    control_socket: Path | None = None  # unix socket that serves `guestfs-mount status` (None: no status)
    # seconds a stop (SIGTERM, SIGINT, unmount) waits for uploads; what is still dirty then goes to recovery_dir
    stop_timeout: float = 60.0
    mountpoint: str = ""  # absolute: a symlink made through the mount into its own VM's directory maps back
    symlinks: str = "inside"  # "inside": readlink shows targets that stay in the VM's directory; "raw": as they are
    # VM name -> whether its guest login may run programs (`exec = true`): symlink(), link(), a symlink's times
    runs_programs: Callable[[str], bool] = _never
    content_max_mib: int = 1024  # copies of closed files kept under spool_dir (contentcache.py; 0: none)
    content_file_max_mib: int = 256  # larger files are read through memory, never whole on disk (spool.py)
    prefetch_files: int = 8  # files of a directory being read one by one fetched ahead (prefetch.py; 0: none)
    prefetch_max_kib: int = 1024  # only files up to this size are fetched ahead
    guest_calls_per_vm: int = 4  # the client's per-VM limit: attribute fetches of a REST listing run this many at once
    write_back: bool = False  # close() returns before the upload, which the write-back queue makes (writeback.py)
    write_back_max_mib: int = 1024  # a writer's close waits while queued uploads hold more than this
    write_back_delay: float = 1.0  # seconds a queued upload waits after the last close (for utimes, chmod, rename)
