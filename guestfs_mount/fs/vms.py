"""The top two levels of the mount: which VMs there are, and which guest path a mount path means.

Mount path "vm1/etc/hosts" is guest path "/etc/hosts" on a Linux VM; on a Windows VM the VM's directory holds
the configured drives, and "win1/C:/x/y" is guest path "C:\\x\\y". The VM list is refreshed every
`vm_list_ttl` seconds; a VM that is off or whose Tools are not ready still lists, but anything below its
directory gives EHOSTDOWN; a VM with no configured guest login gives EACCES.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass

import pyfuse3
import trio

from guestfs_mount.fs.settings import CredentialsLookup, MountSettings
from guestfs_mount.vsphere.faults import VSphereError
from guestfs_mount.vsphere.guestfiles import GuestFiles
from guestfs_mount.vsphere.model import GuestCredentials, VMInfo

log = logging.getLogger(__name__)

LINUX_PATH_MAX = 4095  # bytes of a path a Linux guest accepts (PATH_MAX with its NUL)
# an "unavailable" answer is rechecked this soon, so a VM that was just powered on shows up quickly
UNAVAILABLE_RECHECK = 2.0
# a failed VM listing (vCenter unreachable or timing out) is the answer for this long: callers queued behind it, and
# the kernel's repeat of a lookup whose revalidation failed, would otherwise each wait out a timeout of their own
FAILED_LIST_HOLD = 1.0
# a refused guest login is logged once per VM in this many seconds, however many calls fail with it
LOGIN_REFUSED_REPEAT = 600.0


@dataclass(frozen=True)
class Target:
    vm: VMInfo
    creds: GuestCredentials
    guest_path: str


class VMDirectory:
    def __init__(self, client: GuestFiles, credentials: CredentialsLookup, settings: MountSettings) -> None:
        self.client = client
        self.credentials = credentials
        self.settings = settings
        self._vms: dict[str, VMInfo] | None = None
        self._fetched = 0.0
        self._lock = trio.Lock()
        self._list_failed: tuple[float, int] | None = None  # (when, errno) of the last failed VM listing
        self._login_refused_logged: dict[str, float] = {}  # VM name -> when its refused login was last logged

    async def vms(self, max_age: float | None = None) -> dict[str, VMInfo]:
        max_age = self.settings.vm_list_ttl if max_age is None else max_age
        async with self._lock:
            if self._vms is None or time.monotonic() - self._fetched > max_age:
                failed = self._list_failed
                if failed is not None and time.monotonic() - failed[0] < FAILED_LIST_HOLD:
                    raise pyfuse3.FUSEError(failed[1])
                try:
                    vms = await self.client.list_vms()
                except VSphereError as e:
                    self._list_failed = (time.monotonic(), e.errno or errno.EIO)
                    raise
                self._list_failed = None
                only = set(self.settings.only_vms)
                self._vms = {vm.name: vm for vm in vms if not only or vm.name in only}
                self._fetched = time.monotonic()
            return self._vms

    def invalidate(self) -> None:
        self._vms = None

    def login_refused(self, vm_id: str | None, detail: str) -> None:
        """The guest refused the configured login (every call on the VM gives EACCES): say so, once per VM."""
        name = next((vm.name for vm in (self._vms or {}).values() if vm.id == vm_id), vm_id or "?")
        now = time.monotonic()
        last = self._login_refused_logged.get(name)
        if last is not None and now - last < LOGIN_REFUSED_REPEAT:
            return
        self._login_refused_logged[name] = now
        creds = self.credentials(name)
        user = creds.username if creds is not None else None
        log.error("VM %s: the guest refused the login of user %r (%s); every access to its files gives EACCES "
                  "until the [vms.*] table for it has the right password (said once per %.0f minutes)",
                  name, user, detail, LOGIN_REFUSED_REPEAT / 60)

    def known(self, name: str) -> VMInfo | None:
        """The VM of that name in the last VM list, without asking vCenter (None before the first list)."""
        return (self._vms or {}).get(name)

    @property
    def listed(self) -> int:
        """How many VMs the last VM list held (0 before the first)."""
        return len(self._vms or {})

    async def vm(self, name: str) -> VMInfo:
        vm = (await self.vms()).get(name)
        if vm is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if not self.available(vm):
            vm = (await self.vms(UNAVAILABLE_RECHECK)).get(name)
            if vm is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        return vm

    @staticmethod
    def available(vm: VMInfo) -> bool:
        return vm.powered_on and vm.tools_ready

    def drives(self, vm: VMInfo) -> list[str]:
        return list(self.settings.windows_drives) if vm.is_windows else []

    async def usable(self, name: str) -> tuple[VMInfo, GuestCredentials]:
        """A VM whose files can be reached, and the guest login for it: else EHOSTDOWN, EACCES or ENOENT."""
        vm = await self.vm(name)
        if not self.available(vm):
            raise pyfuse3.FUSEError(errno.EHOSTDOWN)
        creds = self.credentials(vm.name)
        if creds is None:
            raise pyfuse3.FUSEError(errno.EACCES)
        return vm, creds

    async def target(self, path: str) -> Target:
        """The VM, guest login and guest path of a mount path at or below a VM's directory."""
        name, _, rest = path.partition("/")
        vm, creds = await self.usable(name)
        if vm.is_windows:
            drive, _, below = rest.partition("/")
            if drive not in self.settings.windows_drives:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return Target(vm, creds, drive + "\\" + below.replace("/", "\\"))
        guest_path = "/" + rest
        if len(guest_path.encode()) > LINUX_PATH_MAX:
            # no Linux guest takes it; a file created there would fail only at its upload, on close
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        return Target(vm, creds, guest_path)

    async def is_drive(self, path: str) -> bool:
        """Whether `path` is "vm/C:" for a Windows VM (a directory of the mount, not listed from the guest)."""
        name, _, rest = path.partition("/")
        if not rest or "/" in rest:
            return False
        vm = await self.vm(name)
        return vm.is_windows and rest in self.settings.windows_drives
