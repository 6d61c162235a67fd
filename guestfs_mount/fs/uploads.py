"""Getting a file's written bytes to the guest: the upload at close and fsync (mode and times ride on the
initiate), the chmod/touch held just after one (pendingattrs.py), the uploads at a stop, and the recovery
directory for whatever could not be uploaded: close/fsync return the errno, the bytes are kept, one log line says
where. A mixin of GuestOperations (operations.py), whose tables and client it uses.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import time

import pyfuse3
import trio

from guestfs_mount.fs import recovery
from guestfs_mount.fs.attrs import guest_time
from guestfs_mount.fs.handles import OpenFile
from guestfs_mount.fs.inodes import is_under, split
from guestfs_mount.fs.pendingattrs import HELD_FIELDS
from guestfs_mount.fs.writeback import WriteBack
from guestfs_mount.vsphere.faults import VSphereError
from guestfs_mount.vsphere.model import FileAttributes, FileType, GuestFileInfo

log = logging.getLogger(__name__)


class Uploads:
    def _write_back_queue(self) -> WriteBack:
        """The queue of uploads after close (writeback.py), with how this mount uploads and gives up."""
        return WriteBack(delay=self.settings.write_back_delay, max_bytes=self.settings.write_back_max_mib << 20,
                         per_vm=self.settings.guest_calls_per_vm, upload=self._upload_queued,
                         give_up=self._give_up_queued, finished=self._unqueued, path_of=self._live_path,
                         writing=lambda of: any(not h.flushed for h in self._writers(of)))

    async def _upload_at_close(self, of: OpenFile) -> None:
        """At the close of the last writer: the upload now, or (write_back) once the queue has room for it."""
        if not self.settings.write_back:
            await self._upload(of)
            return
        await self.writeback.room(of)
        if of.dirty and self.writeback.add(of):
            self.inodes.opened(of.inode)  # the queue holds the file open: its path follows renames

    async def _fsync(self, of: OpenFile) -> None:
        """Upload now (a queued upload is urged and waited for, and a failed one's errno returned once)."""
        self.writeback.urge(of)
        if of.dirty:
            await self._upload(of, keep_dirty=True)
        err, of.upload_error = of.upload_error, None
        if err is not None:
            raise pyfuse3.FUSEError(err)

    async def _upload_queued(self, of: OpenFile) -> None:
        await self._upload(of, recover=False)

    async def _give_up_queued(self, of: OpenFile, error: Exception) -> str | None:
        async with of.lock:
            path = self._live_path(of)
            if not of.dirty or path is None:
                return None
            kept = self._upload_failed(of, path, error, keep_dirty=False)
            of.upload_error = getattr(error, "errno", None) or errno.EIO
            return str(kept) if kept is not None else ""

    async def _unqueued(self, of: OpenFile) -> None:
        await self._let_go(of, upload=True)
        self.inodes.closed(of.inode)

    def _live_path(self, of: OpenFile) -> str | None:
        node = self.inodes.find_inode(of.inode)
        return None if node is None or node.unlinked else node.path

    def _writers(self, of: OpenFile) -> list:
        return [h for h in self.handles.handles.values() if getattr(h, "file", None) is of and h.writable]

    @contextlib.asynccontextmanager
    async def _uploads_held(self, files: list[OpenFile], *trees: str | None):
        """The locks of `files` and of the files with a queued upload at or below `trees`, taken in one order (two
        renames never wait for each other): uploads in flight have ended, and none starts meanwhile."""
        held = {of.inode: of for of in files}
        for tree in filter(None, trees):
            held.update((of.inode, of) for of in self.writeback.files_under(tree))
        async with contextlib.AsyncExitStack() as stack:
            for inode in sorted(held):
                await stack.enter_async_context(held[inode].lock)
            yield

    async def _upload_landed(self, of: OpenFile | None) -> None:
        """Until a queued upload of `of` in flight has ended."""
        if self.writeback.uploading(of):
            async with of.lock:
                pass

    async def _upload(self, of: OpenFile, keep_dirty: bool = False, recover: bool = True) -> None:
        """Upload a dirty file to its current path (renames move the pending upload), then re-apply its mode,
        owner and times. On failure the spool is copied to the recovery dir and the errno raised (`recover`
        False: the guest call's error raised, the file left dirty, for the write-back queue to try again)."""
        async with of.lock:
            node = self.inodes.find_inode(of.inode)
            if not of.dirty or node is None or node.unlinked:
                of.dirty = False
                of.spool.mark_clean()
                return
            path = node.path
            held = self.pending.take(path)
            if held is not None and held.permissions is not None and of.mode is None:
                of.mode = held.permissions
            size = of.spool.size()
            mtime = of.user_mtime if of.user_mtime is not None else of.mtime or guest_time(time.time())
            atime = of.atime if of.atime is not None else mtime
            base = of.info
            perms = of.mode if of.mode is not None else (base.permissions if base and base.permissions is not None
                                                         else 0o644)
            uid = of.uid if of.uid is not None else (base.uid if base else None)
            gid = of.gid if of.gid is not None else (base.gid if base else None)
            try:
                target = await self.vms.target(path)
                with self.transfers.start(target.vm.name, target.guest_path, "upload", size) as live:
                    # mode and times ride on the initiate (the guest applies them to the new content): no
                    # separate ChangeFileAttributes call, which was a third of what rsync cost per file
                    await self.client.upload(target.vm.id, target.creds, target.guest_path, str(of.spool.path),
                                             size, attrs=FileAttributes(permissions=perms, mtime=mtime, atime=atime),
                                             overwrite=True, progress=live.advance)
                of.on_guest = True
                if uid is not None or gid is not None:
                    # an owner to keep (an overwritten file's, or a chown): the initiate leaves it to the login
                    try:
                        await self.client.set_attributes(target.vm.id, target.creds, target.guest_path,
                                                         FileAttributes(uid=uid, gid=gid))
                    except VSphereError as e:
                        # the guest login may not give files away; the content, mode and times are there
                        log.info("owner of %s not restored after upload: %s", path, e)
                        uid = gid = None
                if uid is None and gid is None:
                    uid, gid = await self._new_file_owner(target, path)
            except (VSphereError, pyfuse3.FUSEError) as e:
                of.content_key = None  # what the guest holds now is not known
                if not recover:
                    raise
                self._upload_failed(of, path, e, keep_dirty)
                raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
            of.dirty = False
            of.spool.mark_clean()
            if self.pending.delay > 0:
                self._just_uploaded[path] = True
            info = GuestFileInfo(name=split(path)[1], type=FileType.FILE, size=size, permissions=perms, uid=uid,
                                 gid=gid, mtime=mtime, atime=atime)
            of.info = info
            of.mode = of.uid = of.gid = of.atime = of.user_mtime = None
            of.mtime = mtime
            of.content_key = (size, mtime)  # the guest holds exactly the spool's bytes: the content cache may too
            self.cache.put(path, info)
            self._open_sig[of.inode] = (size, mtime)

    def _upload_failed(self, of: OpenFile, path: str, error: Exception, keep_dirty: bool):
        """The bytes of a failed upload go to the recovery directory (returns where, None if they could not), and
        the mount shows the guest's file again (unless `keep_dirty`: an fsync's, whose close tries once more)."""
        kept = self._recover(of, path, error)
        self.cache.forget(path)
        if not keep_dirty:
            of.dirty = False
            if not of.on_guest:
                # created here and never on the guest: the kernel must forget the name now, or it opens
                # its stale entry, and even `open(O_CREAT)` of that name gives ENOENT until entry_timeout
                parent = self.inodes.find(split(path)[0])
                if parent is not None:
                    pyfuse3.invalidate_entry_async(parent.inode, os.fsencode(split(path)[1]),
                                                   ignore_enoent=True)
        return kept

    def _mark_dirty(self, of: OpenFile) -> None:
        """Record next to the spool which guest path its unsaved bytes belong to (spool.py, leftovers.py)."""
        node = self.inodes.find_inode(of.inode)
        if node is not None and not node.unlinked:
            of.spool.mark_dirty(node.path)

    async def _new_file_owner(self, target, path: str) -> tuple[int | None, int | None]:
        """Who owns a file the guest login created: learned from the first one per VM, so later new files have
        a whole record without a stat each (a file in a setgid directory may show the login's group until its
        record is next fetched)."""
        owner = self._login_owner.get(target.vm.name)
        if owner is None:
            try:
                info = await self.client.stat(target.vm.id, target.creds, target.guest_path)
            except VSphereError as e:
                log.debug("owner of new file %s not learned: %s", path, e)
                return None, None
            owner = self._login_owner[target.vm.name] = (info.uid, info.gid)
        return owner

    def _recover(self, of: OpenFile, path: str, error: Exception | str):
        try:
            of.spool.settle()
            dest = recovery.keep(self.settings.recovery_dir, path, of.spool.path)
            log.error("upload of %s failed (%s); its content is kept in %s", path, error, dest)
            return dest
        except OSError as e:
            log.error("upload of %s failed (%s) and its content could not be kept: %s", path, error, e)
            return None

    async def _send_held(self, path: str, quiet: bool = False) -> None:
        """Send the chmod/touch held for `path`; its failure is raised (to close) unless `quiet` (logged)."""
        held = self.pending.take(path)
        if held is None:
            return
        try:
            target = await self.vms.target(path)
            await self.client.set_attributes(target.vm.id, target.creds, target.guest_path, held)
        except (VSphereError, pyfuse3.FUSEError) as e:
            self.cache.forget(path)
            if not quiet:
                raise
            log.warning("chmod/touch of %s could not be applied on the guest: %s", path, e)
            return
        # our record again, over a listing fetched while they were held (it showed the guest's times before them)
        self.cache.update(path, **{f: getattr(held, f) for f in HELD_FIELDS if getattr(held, f) is not None})

    async def send_held_attributes(self) -> None:
        """Runs for the mount's life (mount.py): sends held chmod/touch once they are due."""
        while True:
            next_due = self.pending.next_due()
            with trio.move_on_at(next_due if next_due is not None else math.inf):
                await self._pending_added.wait()
                self._pending_added = trio.Event()
                continue
            for path in self.pending.due():
                await self._send_held(path, quiet=True)

    async def sync(self, paths: list[str]) -> list[dict]:
        """`guestfs-mount sync`: every queued upload under `paths` ("" for all) landed, then every chmod/touch held
        there sent (a sync after `rsync -a` must leave the last files' times on the guest, not a second later). What
        failed, as the control socket answers it: upload failures not reported before, then the attributes'."""
        failed = [{"path": f.path, "error": f.error, "errno": f.errno, "kept": f.kept}
                  for f in await self.writeback.sync(paths)]
        for path in self.pending.paths():
            if not any(is_under(path, p) for p in paths):
                continue
            try:
                await self._send_held(path)
            except (VSphereError, pyfuse3.FUSEError) as e:
                log.warning("chmod/touch of %s could not be applied on the guest: %s", path, e)
                failed.append({"path": path, "error": str(e), "errno": e.errno, "attributes": True})
        return failed

    async def flush_all(self) -> None:
        """Upload every dirty file and send every held chmod/touch (at unmount and on SIGTERM). The uploads run
        side by side: a stop waits for the slowest, not for their sum."""
        for path in self.pending.paths():
            await self._send_held(path, quiet=True)
        async with trio.open_nursery() as nursery:
            for of in self.handles.dirty_files():
                nursery.start_soon(self._upload_at_unmount, of)

    async def _upload_at_unmount(self, of: OpenFile) -> None:
        try:
            await self._upload(of)
        except pyfuse3.FUSEError as e:
            log.warning("upload at unmount failed: errno %s", e.errno)
        except Exception:
            log.exception("upload at unmount failed")

    def keep_unsaved(self, why: str) -> int:
        """Copy every file still dirty (its upload not started, or not finished) to the recovery directory with
        its log line, and count it done: at a stop that could not wait any longer (mount.py). An upload still
        running may yet finish; then the file is on the guest as well."""
        kept = 0
        for of in self.handles.dirty_files():
            node = self.inodes.find_inode(of.inode)
            if node is None or node.unlinked:
                continue
            self._recover(of, node.path, why)
            of.dirty = False
            kept += 1
        return kept
