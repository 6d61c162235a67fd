"""Symlinks and hard links: readlink's view of a guest link (symlinks.py), symlink(), link(), and the times and
owner of a symlink itself. The guest file API has no call for any of these but readlink; the others run `ln`,
`touch -h` and `chown -h` in the guest (vsphere/guestprograms.py), which needs `exec = true` in the VM's [vms.*] table, the vCenter privilege
VirtualMachine.GuestOperations.Execute and a Linux guest. Without them: EPERM, and one log line per VM saying why.
A mixin of GuestOperations (operations.py), whose tables and client it uses.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import time

import pyfuse3

from guestfs_mount.fs.attrs import guest_time
from guestfs_mount.fs.inodes import split
from guestfs_mount.fs.symlinks import guest_target, shown_target
from guestfs_mount.fs.vms import Target
from guestfs_mount.vsphere import guestprograms
from guestfs_mount.vsphere.faults import VSphereError
from guestfs_mount.vsphere.model import FileType, GuestFileInfo

log = logging.getLogger(__name__)


class Links:
    def _as_shown(self, path: str, info: GuestFileInfo) -> GuestFileInfo:
        """A symlink's record as the mount shows it: the times this mount gave the link while it still knows them
        (the guest reports its target's: metacache.py), its target as readlink shows it (settings.symlinks)."""
        if info.type is not FileType.SYMLINK:
            return info
        own = self.cache.link_own(path)
        if own:
            info = dataclasses.replace(info, **own)
        if self.settings.symlinks == "raw" or not info.symlink_target:
            return info
        vm_name, *dirs = split(path)[0].split("/")
        vm = self.vms.known(vm_name)
        windows = vm is not None and vm.is_windows
        return dataclasses.replace(info, symlink_target=shown_target(info.symlink_target, dirs, windows,
                                                                     self.settings.windows_drives))

    def _programs_refused(self, target: Target, why: str) -> pyfuse3.FUSEError:
        """EPERM for a link that cannot be made in this VM; the reason is logged once per VM."""
        if target.vm.name not in self._links_refused:
            self._links_refused.add(target.vm.name)
            log.warning("VM %s: %s; symlinks, hard links and a symlink's times give EPERM there (said once)",
                        target.vm.name, why)
        return pyfuse3.FUSEError(errno.EPERM)

    async def _program_target(self, path: str) -> Target:
        """The VM, login and guest path of `path`, when programs may be run there (else EPERM)."""
        target = await self.vms.target(path)
        if target.vm.is_windows:
            raise self._programs_refused(target, "is a Windows guest, where the mount makes no links")
        if not self.settings.runs_programs(target.vm.name):
            raise self._programs_refused(
                target, 'the guest login has no "exec = true" in its [vms.*] table of the config file (it also needs '
                        "the vCenter privilege VirtualMachine.GuestOperations.Execute)")
        return target

    def _program_failed(self, target: Target, error: VSphereError) -> None:
        if isinstance(error, guestprograms.ProgramNotStarted) and target.vm.name not in self._links_refused:
            self._links_refused.add(target.vm.name)
            log.warning("VM %s: %s (the vCenter user needs VirtualMachine.GuestOperations.Execute and the guest "
                        "/bin/ln, /bin/touch and /bin/chown); links there fail until then (said once)",
                        target.vm.name, error)

    async def _absent(self, path: str) -> None:
        """EEXIST unless `path` does not exist; ENOTDIR / ENOENT when its directory cannot hold it."""
        parent = await self._record(split(path)[0])
        if parent.type is not FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        try:
            await self._record(path)
        except pyfuse3.FUSEError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        raise pyfuse3.FUSEError(errno.EEXIST)

    def _linked(self, path: str, info: GuestFileInfo, owner: tuple[int | None, int | None] | None = None,
                new_symlink: bool = False) -> pyfuse3.EntryAttributes:
        info = dataclasses.replace(info, name=split(path)[1])
        self.cache.put(path, info)
        if new_symlink:
            # the guest gave the new link the time of its making and the login as owner, and reports its target's:
            # show the former, so a program setting the link's times or owner (rsync) is not told they are already
            # right when the target's are
            now = guest_time(time.time())
            uid, gid = owner or (None, None)
            self.cache.put_link_own(path, info, mtime=now, atime=now, uid=uid, gid=gid)
        inode = self.inodes.inode_for(path)
        self.inodes.add_lookup(inode)
        return self._attrs(inode, info)

    async def _symlink(self, path: str, raw_target: bytes) -> pyfuse3.EntryAttributes:
        self._guest_level(path)
        try:
            text = raw_target.decode("utf-8")  # guest paths travel as JSON text
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.EILSEQ) from None
        target = await self._program_target(path)
        await self._absent(path)
        if self.settings.symlinks == "inside":
            text = guest_target(text, self.settings.mountpoint, target.vm.name)
        try:
            info = await guestprograms.make_symlink(self.client, target.vm.id, target.creds, text, target.guest_path)
        except VSphereError as e:
            self.cache.forget(path)
            self._program_failed(target, e)
            raise
        return self._linked(path, info, owner=await self._login_owner_of(target), new_symlink=True)

    async def _login_owner_of(self, target: Target) -> tuple[int | None, int | None] | None:
        """Who owns what the guest login makes (a new link's owner, which no stat shows): known from the first
        upload in the VM (uploads.py), else learned once from a temporary file made, stat'ed and removed."""
        owner = self._login_owner.get(target.vm.name)
        if owner is None:
            try:
                temp = await self.client.make_temp(target.vm.id, target.creds, prefix=".guestfs-owner-")
                try:
                    info = await self.client.stat(target.vm.id, target.creds, temp)
                finally:
                    await self.client.remove_file(target.vm.id, target.creds, temp)
            except VSphereError as e:
                log.debug("owner of new links in VM %s not learned: %s", target.vm.name, e)
                return None
            owner = self._login_owner[target.vm.name] = (info.uid, info.gid)
        return owner

    async def _hardlink(self, old: str, new: str) -> pyfuse3.EntryAttributes:
        self._guest_level(new)
        if old.partition("/")[0] != new.partition("/")[0]:
            raise pyfuse3.FUSEError(errno.EXDEV)
        source = await self._program_target(old)
        target = await self.vms.target(new)
        info = await self._record(old)
        if info.type is FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.EPERM)
        node = self.inodes.find(old)
        of = self.handles.files.get(node.inode) if node else None
        if of is not None and of.dirty:
            await self._upload(of, keep_dirty=True)  # the guest links what it has: our bytes first
        await self._absent(new)
        try:
            made = await guestprograms.make_hardlink(self.client, target.vm.id, target.creds, source.guest_path,
                                                     target.guest_path)
        except VSphereError as e:
            self.cache.forget(new)
            self._program_failed(target, e)
            raise
        return self._linked(new, made)

    async def _set_symlink_attributes(self, path: str, info: GuestFileInfo, changes: dict) -> None:
        """chmod/chown/touch of a symlink itself (the guest file API would change its target's). Linux has no mode
        for links (EOPNOTSUPP, as lchmod). An owner runs `chown -h`, times `touch -h`. The guest never shows a
        link's own times or owner (only its target's), so each is set unless this mount gave the link that very
        value within attr_ttl; an atime equal to the one shown is taken as "keep it" (rsync passes back the atime
        it read) unless it can share the mtime's run."""
        if "permissions" in changes:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        own = self.cache.link_own(path)
        shown_atime = self._as_shown(path, info).atime
        given = {f: changes[f] for f in ("mtime", "atime", "uid", "gid") if changes.get(f) is not None}
        given = {f: v for f, v in given.items() if own.get(f) != v}
        mtime, atime = given.get("mtime"), given.get("atime")
        if atime is not None and atime != mtime and shown_atime is not None and math.floor(shown_atime) == atime:
            del given["atime"]
            atime = None
        if not given:
            return
        target = await self._program_target(path)
        try:
            if "uid" in given or "gid" in given:
                await guestprograms.set_symlink_owner(self.client, target.vm.id, target.creds, target.guest_path,
                                                      given.get("uid"), given.get("gid"))
            if mtime is not None or atime is not None:
                await guestprograms.set_symlink_times(self.client, target.vm.id, target.creds, target.guest_path,
                                                      mtime, atime)
        except VSphereError as e:
            self.cache.forget(path)
            self._program_failed(target, e)
            raise
        self.cache.put_link_own(path, info, **given)
