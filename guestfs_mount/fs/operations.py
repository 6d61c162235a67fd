"""The pyfuse3 Operations: each FUSE request is a short handler over the inode table, the metadata cache, the
spool files and the client. Errors become an errno in one place (`_fuse_errors`); nothing else escapes.

Data path: a read starts the file's download (first read, not open) into a spool file and waits only for its
byte range; writes go to the spool; the upload happens on flush (close of the last writer) and fsync
(uploads.py: the upload, held chmod/touch, stops and the recovery directory). A closed file's whole, clean spool
goes to the content cache (contentcache.py), whence the next open takes it back; prefetch.py fills that cache
ahead of a process reading a directory's files in turn; attrfill.py completes REST listings for `ls -l`.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import time

import pyfuse3
import trio
from cachetools import TTLCache

from guestfs_mount.fs.attrfill import AttributeFill
from guestfs_mount.fs.attrs import directory, entry_attributes, guest_time
from guestfs_mount.fs.contentcache import ContentCache, download_key
from guestfs_mount.fs.handles import DirHandle, Handle, HandleTable, OpenFile
from guestfs_mount.fs.inodes import InodeTable, UnknownReference, is_under, join, split
from guestfs_mount.fs.links import Links
from guestfs_mount.fs.metacache import MetaCache, is_complete
from guestfs_mount.fs.pendingattrs import PendingAttributes
from guestfs_mount.fs.refresh import refresh
from guestfs_mount.fs.prefetch import Prefetcher
from guestfs_mount.fs.settings import CredentialsLookup, MountSettings
from guestfs_mount.fs.spares import Spares
from guestfs_mount.fs.spool import Spool
from guestfs_mount.fs.status import LiveTransfer, LiveTransfers
from guestfs_mount.fs.uploads import Uploads
from guestfs_mount.fs.vms import VMDirectory
from guestfs_mount.vsphere.faults import GuestLoginError, VMUnavailableError, VSphereError
from guestfs_mount.vsphere.guestfiles import GuestFiles, ReadTransfer
from guestfs_mount.vsphere.model import FileAttributes, FileType, GuestFileInfo

log = logging.getLogger(__name__)


def _fuse_errors(handler):
    """Map every failure of a handler to a FUSEError: the client's `.errno`, a local OSError's errno, and EIO
    (logged with its traceback) for anything unexpected. pyfuse3 ends the mount on any other exception."""

    @functools.wraps(handler)
    async def wrapper(self, *args, **kwargs):
        if log.isEnabledFor(logging.DEBUG):  # --debug: every request, as the kernel sent it
            log.debug("%s%r", handler.__name__, _loggable(handler.__name__, args))
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except VSphereError as e:
            self._guest_failed(e)
            log.debug("%s%r: %s (errno %s)", handler.__name__, args[:2], e, e.errno)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except UnknownReference:  # an inode or handle the tables no longer know
            log.debug("%s%r: unknown inode or handle", handler.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except OSError as e:
            log.warning("%s%r: local error %s", handler.__name__, args[:2], e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s%r failed", handler.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _loggable(handler: str, args: tuple) -> tuple:
    """A request's arguments fit for the --debug log: the data of a write only as its length (file contents, a
    password saved to a guest file, are no log's business); names of 256 bytes or more left out."""
    if handler == "write":
        return tuple(f"<{len(a)} bytes>" if isinstance(a, (bytes, memoryview)) else a for a in args)
    return tuple(a for a in args if not isinstance(a, (bytes, memoryview)) or len(a) < 256)


# errnos of "vCenter or the host did not answer", not of an answer about the file
UNREACHABLE = (errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET)


NAME_MAX = 255  # bytes of a name on a Linux guest; UTF-16 units on a Windows (NTFS) one


def _name(raw: bytes) -> str:
    """A name the kernel sent, as a guest can hold it; refused here, without a guest call, when no guest could."""
    try:
        # guest paths travel as JSON text: bytes that are not UTF-8 cannot be named on any guest (and would fail
        # to encode deep in the client, as EIO with a traceback)
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EILSEQ) from None
    if not name or "/" in name or name in (".", ".."):
        raise pyfuse3.FUSEError(errno.EINVAL)
    # the kernel passes names of up to 1024 bytes to FUSE; one longer than both guests' limits exists nowhere
    if len(raw) > NAME_MAX and len(name.encode("utf-16-le")) > 2 * NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    return name


def _past_page_cache(of: OpenFile, flags: int, created: bool) -> bool:
    """Whether an open of `of` (before its handle is added) bypasses the kernel's page cache (FOPEN_DIRECT_IO).

    A write-only open that makes the file anew (cp, dd, tar, a shell's `>`) does: its bytes are in the spool
    already, and a second copy there costs a copy and as much memory again, which on a machine short of free pages
    is most of a write's time. An O_WRONLY descriptor cannot be mmap'd, so nothing loses mmap; O_RDWR opens and
    appends keep the page cache (mmap, readers of the same file). Only for an open alone on the file (a reader
    already there has pages these writes would not update), and the opens that come while it lasts bypass the page
    cache too."""
    if of.direct_writers:
        return True
    return of.handles == 0 and (flags & os.O_ACCMODE) == os.O_WRONLY and (created or bool(flags & os.O_TRUNC))


class GuestOperations(Links, Uploads, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, client: GuestFiles, credentials: CredentialsLookup, settings: MountSettings) -> None:
        super().__init__()
        self.client = client
        self.settings = settings
        self.vms = VMDirectory(client, credentials, settings)
        self.inodes = InodeTable()
        self.cache = MetaCache(settings.attr_ttl, settings.dir_ttl)
        self.handles = HandleTable()
        self.ttl = settings.attr_ttl
        self.nursery: trio.Nursery | None = None  # set by mount.py; owns downloads
        self.transfers = LiveTransfers()  # downloads and uploads in flight, for `guestfs-mount status`
        self._open_sig: dict[int, tuple[int, float | None]] = {}  # inode -> (size, mtime) at its last open
        self._listing_now: dict[str, trio.Event] = {}  # directories whose listing is being fetched
        self.largest_write = self.largest_read = 0  # logged at unmount: what the kernel really sends
        self._misses_by_dir: TTLCache = TTLCache(maxsize=1024, ttl=max(settings.attr_ttl, 1e-6))
        self._login_owner: dict[str, tuple[int | None, int | None]] = {}  # VM -> owner of files its login makes
        self._links_refused: set[str] = set()  # VMs where making links was refused (logged once each)
        # files we uploaded in the last attr_delay seconds: a chmod/touch of one is a copying tool finishing it
        self._just_uploaded: TTLCache = TTLCache(maxsize=4096, ttl=max(settings.attr_delay, 1e-6))
        # chmod/touch waiting to share one guest call
        self.pending = PendingAttributes(settings.attr_delay, clock=trio.current_time)
        self._pending_added = trio.Event()
        self.initialized = trio.Event()  # the kernel's INIT is answered: per-mount kernel settings stick now
        self.contents = ContentCache(settings.spool_dir, settings.content_max_mib << 20)
        self.spares = Spares(settings.spool_dir)  # the last spool's page cache, for the next file written anew
        self.attrfill = AttributeFill(self.cache, self._fetch_record, settings.guest_calls_per_vm)
        self.writeback = self._write_back_queue()  # uploads after close (write_back)
        self.prefetch = Prefetcher(files=settings.prefetch_files, max_bytes=settings.prefetch_max_kib << 10,
                                   contents=self.contents, cache=self.cache, client=client, transfers=self.transfers,
                                   record=lambda path: self._record(path, complete=True), target=self.vms.target,
                                   is_open=self._is_open)

    def init(self):
        self.initialized.set()

    # ------------------------------------------------------------------------------------------------
    # records
    async def _record(self, path: str, complete: bool = False) -> GuestFileInfo:
        """What `path` is; ENOENT when it does not exist. `complete`: fetch the full record if the cache has only
        a listing's partial one."""
        name = split(path)[1]
        if path == "":
            return directory("")
        if "/" not in path:
            await self.vms.vm(path)  # ENOENT for a VM that is not there
            return directory(path)
        if await self.vms.is_drive(path):
            return directory(name)
        await self.vms.target(path)  # EHOSTDOWN / EACCES whatever the cache holds
        known, info = self.cache.lookup(path)
        if known and info is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if known and (not complete or is_complete(info)):
            return info
        node = self.inodes.find(path)
        of = self.handles.files.get(node.inode) if node else None
        if of is not None and not of.on_guest:
            return info or self._created_record(name, of)
        if not known and await self._list_instead(path):
            return await self._record(path, complete)
        if known:  # a REST listing's partial record: fetched with its neighbours' (ls -l)
            filled = await self.attrfill.record(path)
            if filled is not None:
                return filled
        return await self._fetch_record(path, complete)

    async def _fetch_record(self, path: str, complete: bool = True) -> GuestFileInfo:
        """The guest's record of `path` (one stat), cached unless this mount changed the path meanwhile; a path
        that does not exist is cached as such. FUSEError when the stat fails. `complete`: when this mount changed
        the path meanwhile, its own record answers only if it is complete (else the guest's does)."""
        target = await self.vms.target(path)
        mark = self.cache.mark()
        try:
            info = await self.client.stat(target.vm.id, target.creds, target.guest_path)
        except VSphereError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR) and not self.cache.changed_since(path, mark):
                self.cache.put(path, None, ours=False)
            self._guest_failed(e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None  # callers test for ENOENT
        info = dataclasses.replace(info, name=split(path)[1], **self.pending.as_changes(path))
        if self.cache.changed_since(path, mark):
            # we changed it while the guest answered (an upload landed): our own record is the newer one
            known, ours = self.cache.lookup(path)
            if known and ours is not None and (not complete or is_complete(ours)):
                return ours
            return info
        self.cache.put(path, info, ours=False)
        return info

    def _guest_failed(self, e: VSphereError) -> None:
        """What a failed guest call means beyond its errno: a VM that became unavailable is looked up anew, and
        a refused guest login is logged once per VM (at debug level each call is; a shell's tab completion alone
        makes dozens)."""
        if isinstance(e, VMUnavailableError):
            self.vms.invalidate()
        elif isinstance(e, GuestLoginError):
            self.vms.login_refused(e.vm, str(e))

    async def _list_instead(self, path: str) -> bool:
        """Whether `path`'s directory was just listed to answer this lookup. One listing call answers every name
        in a directory, so once a third name of a directory misses the cache within attr_ttl (rsync and find
        lstat each name of a tree they did not list), the directory is listed rather than each name stat'ed."""
        parent = split(path)[0]
        misses = self._misses_by_dir.get(parent, 0) + 1
        self._misses_by_dir[parent] = misses
        if misses < 3 or "/" not in parent:
            return False
        try:
            await self._listing(parent)
        except (pyfuse3.FUSEError, VSphereError):
            return False  # the stat then gives this name's own answer
        # not `del`: a miss that joined this listing, the count's attr_ttl running out during it or a refresh
        # may have cleared the count already (a KeyError here was a published file's ENOENT under load)
        self._misses_by_dir.pop(parent, None)
        return self.cache.lookup(path)[0]

    @staticmethod
    def _created_record(name: str, of: OpenFile) -> GuestFileInfo:
        return GuestFileInfo(name=name, type=FileType.FILE, size=0, permissions=of.mode, mtime=of.mtime,
                             atime=of.mtime)

    def _overlay(self, inode: int, info: GuestFileInfo) -> GuestFileInfo:
        """Our own changes not yet on the guest (a dirty spool, attributes held until the upload) win."""
        of = self.handles.files.get(inode)
        if of is None or info.type is not FileType.FILE:
            return info
        changes = {}
        if of.dirty or not of.on_guest:
            changes["size"] = of.spool.size()
            changes["mtime"] = of.user_mtime if of.user_mtime is not None else of.mtime
        elif of.user_mtime is not None:
            changes["mtime"] = of.user_mtime
        for field, value in (("permissions", of.mode), ("uid", of.uid), ("gid", of.gid), ("atime", of.atime)):
            if value is not None:
                changes[field] = value
        return dataclasses.replace(info, **changes) if changes else info

    def _attrs(self, inode: int, info: GuestFileInfo) -> pyfuse3.EntryAttributes:
        node = self.inodes.find_inode(inode)
        held = self.pending.as_changes(node.path) if node is not None and len(self.pending) else None
        if held:  # a chmod/touch not sent yet: over a listing's record too (rsync's second run compares the mtime)
            info = dataclasses.replace(info, **held)
        if info.type is FileType.SYMLINK:
            info = self._as_shown(self._path(inode), info)  # st_size is the length of what readlink shows
        return entry_attributes(inode, self._overlay(inode, info), self.ttl)

    def _path(self, inode: int) -> str:
        return self.inodes.path(inode)

    def _guest_level(self, path: str) -> None:
        """Changes are possible only below a VM's directory (and below a drive on Windows)."""
        if "/" not in path:
            raise pyfuse3.FUSEError(errno.EPERM)

    async def _listing(self, path: str) -> list[tuple[str, GuestFileInfo]]:
        if path == "":
            vms = await self.vms.vms()
            return [(name, directory(name)) for name in sorted(vms)]
        if "/" not in path:
            vm = await self.vms.vm(path)
            drives = self.vms.drives(vm)
            if drives:
                return [(d, directory(d)) for d in drives]
        listing = self.cache.listing(path)
        while listing is None and path in self._listing_now:
            # one listing call for concurrent readers of a directory; after one that was not kept (our change
            # landed meanwhile) one waiter lists again and the others wait for it, never two listers at once
            await self._listing_now[path].wait()
            listing = self.cache.listing(path)
        if listing is None:
            done = self._listing_now[path] = trio.Event()
            try:
                target = await self.vms.target(path)
                for _ in range(3):
                    mark = self.cache.mark()
                    entries = [e async for e in self.client.list_dir(target.vm.id, target.creds, target.guest_path)]
                    # a listing made before our own change in the directory landed (an upload, a rename) would
                    # hide or revive names until dir_ttl: ask again rather than keep it
                    if not self.cache.changed_since(path, mark, listing=True):
                        listing = self.cache.put_listing(path, entries)
                        break
                else:
                    listing = self.cache.corrected(path, entries)
            finally:
                del self._listing_now[path]
                done.set()
        result = []
        for name, entry in listing.items():
            known, info = self.cache.lookup(join(path, name))  # our own newer record wins
            if known and info is not None:
                entry = info
            result.append((name, entry))
        # files created here and not uploaded yet
        names = set(listing)
        for of in self.handles.files.values():
            node = self.inodes.find_inode(of.inode)
            if node and not node.unlinked and not of.on_guest and split(node.path)[0] == path:
                name = split(node.path)[1]
                if name not in names:
                    result.append((name, self._created_record(name, of)))
        return result

    # ------------------------------------------------------------------------------------------------
    # lookups and attributes
    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        path = join(self._path(parent_inode), _name(name))
        info = await self._record(path)
        inode = self.inodes.inode_for(path)
        self.inodes.add_lookup(inode)
        return self._attrs(inode, info)

    async def forget(self, inode_list):
        for inode, n in inode_list:
            self.inodes.forget(inode, n)
            if self.inodes.find_inode(inode) is None:
                self._open_sig.pop(inode, None)

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        node = self.inodes.node(inode)
        of = self.handles.files.get(inode)
        if node.unlinked or (of is not None and not of.on_guest):
            if of is None or of.info is None and of.on_guest:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attrs(inode, of.info or self._created_record(split(node.path)[1], of))
        try:
            return self._attrs(inode, await self._record(node.path, complete=True))
        except (pyfuse3.FUSEError, VSphereError) as e:
            # the kernel asks before reading an open file whose attributes expired; when vCenter cannot be
            # reached, the record the open file holds answers, so reads of bytes already here go on
            if of is None or of.info is None or e.errno not in UNREACHABLE:
                raise
            log.debug("getattr of open %s answered from its handle: vCenter unreachable (%s)", node.path, e)
            return self._attrs(inode, of.info)

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.inodes.node(inode)
        path = node.path
        self._guest_level(path)
        of = self.handles.files.get(inode)
        if node.unlinked or (of is not None and not of.on_guest):
            # only our spool knows this file (created and not uploaded yet, or unlinked while open)
            if of is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            info = of.info or self._created_record(split(path)[1], of)
        else:
            info = await self._record(path, complete=True)
        if fields.update_size:
            if info.type is FileType.DIRECTORY:
                raise pyfuse3.FUSEError(errno.EISDIR)
            await self._truncate(inode, path, info, attr.st_size)
        changes = {}
        if fields.update_mode:
            changes["permissions"] = attr.st_mode & 0o7777
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_atime:
            changes["atime"] = guest_time(attr.st_atime_ns / 1e9)
        if fields.update_mtime:
            changes["mtime"] = guest_time(attr.st_mtime_ns / 1e9)
        if info.type is FileType.SYMLINK:
            await self._set_symlink_attributes(path, info, changes)  # never the target's, as the file API would
        elif changes:
            of = self.handles.files.get(inode)
            await self._upload_landed(of)  # a queued upload in flight sends what it read: this comes after it
            if of is not None:
                # kept until (and re-applied after) the upload, which resets them
                of.mode = changes.get("permissions", of.mode)
                of.uid = changes.get("uid", of.uid)
                of.gid = changes.get("gid", of.gid)
                of.atime = changes.get("atime", of.atime)
                of.user_mtime = changes.get("mtime", of.user_mtime)
            if (of is None or (of.on_guest and not of.dirty)) and not node.unlinked:
                if path in self._just_uploaded and self.pending.holdable(changes):
                    self.pending.hold(path, changes)
                    self._pending_added.set()
                else:
                    held = self.pending.take(path)
                    attrs = FileAttributes(**{**(dataclasses.asdict(held) if held else {}), **changes})
                    target = await self.vms.target(path)
                    await self.client.set_attributes(target.vm.id, target.creds, target.guest_path, attrs)
                self.cache.update(path, **changes)
                if "mtime" in changes:  # the content is what it was: a copy of it is one of the new record
                    self._retimed(path, info, of, changes["mtime"])
        return await self.getattr(inode)

    @_fuse_errors
    async def readlink(self, inode, ctx):
        path = self._path(inode)
        info = await self._record(path, complete=True)
        if info.type is not FileType.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        target = self._as_shown(path, info).symlink_target
        if not target:  # the guest did not say (Windows attributes have no target); "" would lead to this directory
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return os.fsencode(target)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = 1 << 32  # 16 TiB: the guest's real free space is not known; programs only need room
        s.f_bfree = s.f_bavail = 1 << 31
        s.f_files = 1 << 24
        s.f_ffree = s.f_favail = s.f_files - len(self.inodes)  # "used" = inodes the kernel holds
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------------------------------------
    # directories
    @_fuse_errors
    async def opendir(self, inode, ctx):
        path = self._path(inode)
        info = await self._record(path)
        if info.type is not FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if path:
            await self.vms.usable(path.partition("/")[0])  # EHOSTDOWN / EACCES now rather than at readdir
        fh = self.handles.new_fh()
        self.handles.add(DirHandle(fh, inode, path))
        return fh

    @_fuse_errors
    async def readdir(self, fh, start_id, token):
        dh = self.handles.get(fh)
        base = self._path(dh.inode)
        if dh.entries is None or start_id == 0:
            dots = [(".", directory(".")), ("..", directory(".."))]
            dh.entries = dots + await self._listing(base)
        for i in range(start_id, len(dh.entries)):
            name, info = dh.entries[i]
            if name in (".", ".."):
                # the kernel takes no lookup for these, so neither do we
                inode = dh.inode if name == "." or not base else self.inodes.inode_for(split(base)[0])
                if not pyfuse3.readdir_reply(token, name.encode(), self._attrs(inode, info), i + 1):
                    break
                continue
            inode = self.inodes.inode_for(join(base, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(inode, info), i + 1):
                self.inodes.drop_unreferenced(inode)
                break
            self.inodes.add_lookup(inode)

    async def releasedir(self, fh):
        self.handles.pop(fh)

    async def fsyncdir(self, fh, datasync):
        pass

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        path = join(self._path(parent_inode), _name(name))
        self._guest_level(path)
        target = await self.vms.target(path)
        await self.client.mkdir(target.vm.id, target.creds, target.guest_path)
        perms = mode & 0o7777
        if perms != 0o700:  # the guest agent makes 0700
            await self.client.set_attributes(target.vm.id, target.creds, target.guest_path,
                                             FileAttributes(permissions=perms))
        now = guest_time(time.time())
        info = GuestFileInfo(name=split(path)[1], type=FileType.DIRECTORY, permissions=perms, mtime=now, atime=now)
        self.cache.put(path, info)
        self.cache.put_listing(path, [])
        inode = self.inodes.inode_for(path)
        self.inodes.add_lookup(inode)
        return self._attrs(inode, info)

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        path = join(self._path(parent_inode), _name(name))
        self._guest_level(path)
        info = await self._record(path)
        if info.type is not FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if await self.vms.is_drive(path):
            raise pyfuse3.FUSEError(errno.EPERM)
        if self.writeback.any_under(path):  # files whose upload is queued are in it
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        target = await self.vms.target(path)
        try:
            await self.client.remove_dir(target.vm.id, target.creds, target.guest_path, recursive=False)
        except VSphereError:
            self.cache.forget(path)
            raise
        self.inodes.unlink_tree(path)
        self.pending.drop_tree(path)
        self.cache.remove_tree(path)
        self.contents.drop_tree(path)

    # ------------------------------------------------------------------------------------------------
    # names
    @_fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        path = join(self._path(parent_inode), _name(name))
        self._guest_level(path)
        info = await self._record(path)
        if info.type is FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.EISDIR)
        node = self.inodes.find(path)
        of = self.handles.files.get(node.inode) if node else None
        await self._upload_landed(of)
        if of is None or of.on_guest:
            target = await self.vms.target(path)
            try:
                await self.client.remove_file(target.vm.id, target.creds, target.guest_path)
            except VSphereError:
                self.cache.forget(path)
                raise
        if of is not None:
            of.dirty = False  # never upload a file unlinked while open
            of.spool.mark_clean()
        self.pending.drop_tree(path)
        self.writeback.forget_failures(path)
        self.inodes.unlink(path)
        self.cache.remove_tree(path)
        self.contents.drop(path)

    @_fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_NOREPLACE / RENAME_EXCHANGE: not atomic on a guest
        old = join(self._path(parent_inode_old), _name(name_old))
        new = join(self._path(parent_inode_new), _name(name_new))
        self._guest_level(old)
        self._guest_level(new)
        if old == new:
            return
        if old.partition("/")[0] != new.partition("/")[0]:
            raise pyfuse3.FUSEError(errno.EXDEV)
        info = await self._record(old)
        try:
            dst = await self._record(new)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.ENOENT:
                raise
            dst = None
        src_t = await self.vms.target(old)
        dst_t = await self.vms.target(new)
        node = self.inodes.find(old)
        moving = self.handles.files.get(node.inode) if node and info.type is not FileType.DIRECTORY else None
        # an upload in flight has its guest path already: the file moves once it has landed (else the upload
        # lands under the old name after the move, a stale copy there and the old content under the new one)
        # so do queued uploads below a directory moved, and of a file renamed over (after the move it is not its)
        async with self._uploads_held([moving] if moving else [], old if info.type is FileType.DIRECTORY else None,
                                      new):
            if moving is not None:
                info = await self._record(old)  # the upload we waited for has put its new record in the cache
            await self._move(old, new, info, dst, src_t, dst_t, moving)

    async def _move(self, old: str, new: str, info: GuestFileInfo, dst: GuestFileInfo | None, src_t, dst_t,
                    of: OpenFile | None) -> None:
        vm, creds = src_t.vm.id, src_t.creds
        if info.type is FileType.DIRECTORY:
            if is_under(new, old):
                raise pyfuse3.FUSEError(errno.EINVAL)
            if dst is not None:
                if dst.type is not FileType.DIRECTORY:
                    raise pyfuse3.FUSEError(errno.ENOTDIR)
                if await self._nonempty(new):
                    raise pyfuse3.FUSEError(errno.ENOTEMPTY)
                await self.client.remove_dir(vm, creds, dst_t.guest_path, recursive=False)
            try:
                await self.client.move_dir(vm, creds, src_t.guest_path, dst_t.guest_path)
            except VSphereError:
                self.cache.forget(old)
                self.cache.forget(new)
                raise
        else:
            if dst is not None and dst.type is FileType.DIRECTORY:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if of is None or of.on_guest:
                try:
                    await self.client.move_file(vm, creds, src_t.guest_path, dst_t.guest_path, overwrite=True)
                except VSphereError:
                    self.cache.forget(old)
                    self.cache.forget(new)
                    raise
            elif dst is not None and not self.writeback.holds(of):
                # the pending upload will overwrite it; until then it must not show under the old content. A
                # write-back upload queued overwrites it in its turn: the guest keeps the old file whole until then
                # (a program there never finds it missing; a failed upload leaves it, and the bytes are recovered)
                try:
                    await self.client.remove_file(vm, creds, dst_t.guest_path)
                except VSphereError as e:
                    if e.errno != errno.ENOENT:
                        raise
        replaced = self.inodes.find(new)
        if replaced is not None:
            of = self.handles.files.get(replaced.inode)
            if of is not None:
                of.dirty = False
                of.spool.mark_clean()
        self.inodes.rename(old, new)
        for of in self.handles.files.values():  # unsaved bytes after a crash go by the name they have now
            if of.spool.marked is not None and is_under(of.spool.marked, old):
                self._mark_dirty(of)
        self.pending.rename(old, new)
        self.cache.rename(old, new, dataclasses.replace(info, name=split(new)[1], **self.pending.as_changes(new)))
        self.contents.rename(old, new, tree=info.type is FileType.DIRECTORY)

    async def _nonempty(self, path: str) -> bool:
        target = await self.vms.target(path)
        async for _ in self.client.list_dir(target.vm.id, target.creds, target.guest_path):
            return True
        return False

    @_fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        return await self._symlink(join(self._path(parent_inode), _name(name)), target)

    @_fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return await self._hardlink(self._path(inode), join(self._path(new_parent_inode), _name(new_name)))

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    # ------------------------------------------------------------------------------------------------
    # files
    def _open_file(self, inode: int, info: GuestFileInfo | None, on_guest: bool = True,
                   cached: bool = True) -> OpenFile:
        """The inode's OpenFile; a new one's spool is the content cache's copy when it has a valid one (`cached`)."""
        of = self.handles.files.get(inode)
        if of is None:
            path = self._path(inode)
            copy = self.contents.take(path, info) if on_guest and cached else None
            spool = None
            if copy is not None:
                try:
                    spool = Spool.adopt(self.settings.spool_dir, copy[0], path)
                except OSError as e:
                    log.debug("cached copy of %s not usable: %s", path, e)
            key = copy[1] if spool is not None else None
            spool = spool or Spool(self.settings.spool_dir, path, self.settings.content_file_max_mib << 20,
                                   spares=self.spares)
            of = OpenFile(inode, spool, info, on_guest=on_guest, content_key=key)
            self.handles.files[inode] = of
        return of

    def _is_open(self, path: str) -> bool:
        node = self.inodes.find(path)
        return node is not None and node.inode in self.handles.files

    def _keep_content(self, path: str, of: OpenFile) -> None:
        """At the last close: a spool that is a whole copy of the guest's file goes to the content cache."""
        if of.content_key is None or of.dirty:
            return
        file = of.spool.surrender()
        if file is not None:
            try:
                self.contents.add(path, file, of.content_key)
            except OSError as e:
                log.debug("copy of %s not kept: %s", path, e)

    def _retimed(self, path: str, info: GuestFileInfo, of: OpenFile | None, mtime: float) -> None:
        """We set `path`'s mtime: a copy of its content (cached, or an open file's clean spool) is one of the new
        record."""
        if of is not None and of.content_key is not None and not of.dirty:
            of.content_key = (of.content_key[0], mtime) if of.content_key[1] == info.mtime else None
        self.contents.retime(path, info.mtime, mtime)

    def _add_handle(self, of: OpenFile, writable: bool, append: bool, direct: bool = False) -> Handle:
        handle = Handle(self.handles.new_fh(), of.inode, of, writable, append, direct_writer=direct and writable)
        self.handles.add(handle)
        of.handles += 1
        of.writers += writable
        of.direct_writers += handle.direct_writer
        self.inodes.opened(of.inode)
        return handle

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        path = self._path(inode)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = writable and flags & os.O_TRUNC
        if inode not in self.handles.files and not truncate:
            await self.prefetch.settle(path)  # a prefetch of this file on its way: wait, rather than fetch again
        # a cached copy is checked against the size and mtime of the record (REST listings have no mtime)
        info = await self._record(path, complete=writable or self.contents.holds(path))
        if info.type is FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if writable:
            self._guest_level(path)
        elif ctx is not None:
            self.prefetch.opened(path, ctx.pid)
        had = inode in self.handles.files
        of = self._open_file(inode, info, cached=not truncate)
        direct = _past_page_cache(of, flags, created=False)
        handle = self._add_handle(of, writable, bool(flags & os.O_APPEND), direct)
        try:
            if truncate:
                async with of.lock:
                    of.spool.make_empty()
                    self._changed(of)
            elif writable:
                self._start_download(of)
                await of.spool.wait_complete()
        except BaseException:
            await self._release(handle.fh, upload=False)
            raise
        sig = (info.size, info.mtime)
        keep = had or (not writable and self._open_sig.get(inode) == sig)
        self._open_sig[inode] = sig
        return pyfuse3.FileInfo(fh=handle.fh, keep_cache=keep and not direct, direct_io=direct)

    @_fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        path = join(self._path(parent_inode), _name(name))
        self._guest_level(path)
        await self.vms.target(path)
        parent = await self._record(self._path(parent_inode))
        if parent.type is not FileType.DIRECTORY:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        try:
            existing = await self._record(path)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.ENOENT:
                raise
            existing = None
        if existing is not None:
            if flags & os.O_EXCL:
                raise pyfuse3.FUSEError(errno.EEXIST)
            inode = self.inodes.inode_for(path)
            self.inodes.add_lookup(inode)
            fi = await self.open(inode, flags, ctx)
            return fi, await self.getattr(inode)
        inode = self.inodes.inode_for(path)
        of = self._open_file(inode, None, on_guest=False)
        of.spool.make_empty()
        of.mode = mode & 0o7777
        self._changed(of)
        direct = _past_page_cache(of, flags, created=True)
        handle = self._add_handle(of, True, bool(flags & os.O_APPEND), direct)
        self.inodes.add_lookup(inode)
        info = self._created_record(split(path)[1], of)
        self.cache.put(path, info)
        self._open_sig.pop(inode, None)
        return pyfuse3.FileInfo(fh=handle.fh, keep_cache=False, direct_io=direct), self._attrs(inode, info)

    def _changed(self, of: OpenFile) -> None:
        self._mark_dirty(of)
        of.dirty = True
        of.content_key = None
        of.mtime = guest_time(time.time())
        of.user_mtime = None

    def _start_download(self, of: OpenFile) -> None:
        if of.spool.complete or of.spool.downloading:
            return
        if of.spool.started and of.spool.error is not None:
            return  # failed: the readers get its errno until the file is closed
        path = self._path(of.inode)
        started = time.time()

        async def opener() -> tuple[ReadTransfer, LiveTransfer]:
            target = await self.vms.target(path)
            transfer = await self.client.open_read(target.vm.id, target.creds, target.guest_path)
            return transfer, self.transfers.start(target.vm.name, target.guest_path, "download", transfer.size)

        def on_info(transfer: ReadTransfer) -> None:
            record = transfer.info or of.info
            if record is not None and transfer.size is not None:
                record = dataclasses.replace(record, size=transfer.size, name=split(path)[1])
                of.info = record
                if not of.dirty:
                    of.content_key = download_key(record, started)  # good once the download is complete
                    if self.inodes.find(path) is not None:
                        self.cache.put(path, record, ours=False)

        known = of.info

        def on_failure() -> None:
            # the size a failed GET announced is not the file's (REST learns sizes from the GET, and a server may
            # announce 4 GiB and send 1000 bytes): stat must not show it, nor readers' kernels read to it
            of.content_key = None
            if of.info is not known:
                of.info = known
                if not of.dirty:
                    self.cache.forget(path)

        of.spool.start_download(self.nursery, opener, on_info, on_failure)

    @_fuse_errors
    async def read(self, fh, off, size):
        of = self.handles.get(fh).file
        if not of.spool.complete:
            self._start_download(of)
        self.largest_read = max(self.largest_read, size)
        return await of.spool.read(off, size)

    @_fuse_errors
    async def write(self, fh, off, buf):
        handle = self.handles.get(fh)
        of = handle.file
        async with of.lock:
            await of.spool.wait_complete()
            if handle.append:
                off = of.spool.size()
            self._mark_dirty(of)  # before the bytes land: a spool holding unsaved bytes always says whose they are
            n = of.spool.write(off, buf)
            handle.flushed = False
            self._changed(of)
        self.largest_write = max(self.largest_write, n)
        return n

    async def _truncate(self, inode: int, path: str, info: GuestFileInfo, size: int) -> None:
        of = self.handles.files.get(inode)
        if of is not None and of.handles:
            async with of.lock:
                if size == 0:
                    of.spool.make_empty()
                else:
                    self._start_download(of)
                    await of.spool.wait_complete()
                    of.spool.truncate(size)
                self._changed(of)
            return
        # a closed file: fetch (unless emptied), cut or extend, upload, all through a short-lived open
        of = self._open_file(inode, info)
        handle = self._add_handle(of, True, False)
        try:
            await self._truncate(inode, path, info, size)
            await self._upload(of)
        finally:
            await self._release(handle.fh, upload=False)

    @_fuse_errors
    async def flush(self, fh):
        handle = self.handles.get(fh)
        handle.flushed = True
        if handle.writable and handle.file.dirty and not self._writers_at_work(handle):
            await self._upload_at_close(handle.file)
        if handle.file.handles <= 1:
            await self._send_held(self._path(handle.inode))

    def _writers_at_work(self, handle: Handle) -> bool:
        """Whether another writable handle of the same file may still write: one not flushed since its last write.
        A handle whose fd was closed is flushed, but its release may come much later (the kernel queues releases
        behind its other background requests): counted as a writer, it made a close return before its upload,
        which then raced the program's next rename."""
        return any(isinstance(h, Handle) and h is not handle and h.file is handle.file and h.writable
                   and not h.flushed for h in self.handles.handles.values())

    @_fuse_errors
    async def fsync(self, fh, datasync):
        await self._fsync(self.handles.get(fh).file)

    async def release(self, fh):
        try:
            await self._release(fh, upload=True)
        except Exception:
            log.exception("release of handle %s failed", fh)

    async def _release(self, fh: int, upload: bool) -> None:
        handle = self.handles.pop(fh)
        if handle is None:
            return
        of = handle.file
        of.handles -= 1
        of.writers -= handle.writable
        of.direct_writers -= handle.direct_writer
        try:
            if of.handles == 0:
                if upload and of.dirty:
                    try:
                        await self._upload_at_close(of)
                    except pyfuse3.FUSEError as e:
                        log.warning("upload at release failed: errno %s", e.errno)
                await self._let_go(of, upload)
        finally:
            self.inodes.closed(of.inode)

    async def _let_go(self, of: OpenFile, upload: bool) -> None:
        """The file's last handle is gone (and the write-back queue does not hold it): its spool goes."""
        if self.handles.files.get(of.inode) is of and of.handles == 0 and not self.writeback.holds(of):
            del self.handles.files[of.inode]
            node = self.inodes.find_inode(of.inode)
            if node is not None and not node.unlinked:
                self._keep_content(node.path, of)
            of.spool.close()
            if upload and node is not None and not node.unlinked:
                await self._send_held(node.path, quiet=True)

    async def refresh(self, path: str) -> dict:
        """Forget what is cached of mount path `path` and below, here and in the kernel (refresh.py), and the
        content cache's copies there: a file changed on the guest within the second of its mtime, with the same
        size, would otherwise still read as the copy."""
        self.contents.drop_tree(path)
        return await refresh(path, self.cache, self.inodes, self.vms.invalidate, also=(self._misses_by_dir,))

    def figures(self) -> dict[str, int]:
        """Counts for `guestfs-mount status`."""
        return {**self.cache.figures(), "inodes": len(self.inodes), "open_files": len(self.handles.files),
                "dirty_files": len(self.handles.dirty_files()),
                "spool_bytes": sum(of.spool.disk_bytes() for of in self.handles.files.values()),
                "spare_spool_bytes": self.spares.size, "spare_spools_taken": self.spares.taken,
                "vms_listed": self.vms.listed, "live_transfers": len(self.transfers),
                "attributes_fetched_ahead": self.attrfill.fetched, **self.contents.figures(),
                **self.prefetch.figures(), **(self.writeback.figures() if self.settings.write_back else {})}

    def close_spools(self) -> None:
        """At shutdown: delete the spool files of handles the kernel will never release."""
        for of in list(self.handles.files.values()):
            of.spool.close()
        self.handles.files.clear()
        self.spares.drop()
        self.contents.close()
