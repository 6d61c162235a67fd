"""Unit tests of the mount's parts: the inode table, the metadata cache, spool files and the operations' data path
(called directly, no kernel), over a local-directory guest."""

from __future__ import annotations

import errno
import os
import time

import pyfuse3
import pytest
import trio

from guestfs_mount.fs.inodes import InodeTable, is_under
from guestfs_mount.fs.metacache import MetaCache, is_complete
from guestfs_mount.fs.operations import GuestOperations
from guestfs_mount.fs.settings import MountSettings
from guestfs_mount.vsphere.model import FileType, GuestCredentials, GuestFileInfo
from tests.helpers.localguest import LocalGuest


def F(name, size=0, **kw):
    return GuestFileInfo(name=name, type=FileType.FILE, size=size, **kw)


# --- inodes ------------------------------------------------------------------------------------------------
def test_inode_numbers_are_stable_and_forget_frees():
    t = InodeTable()
    a = t.inode_for("vm/a")
    assert t.inode_for("vm/a") == a and t.path(a) == "vm/a"
    t.add_lookup(a, 2)
    t.forget(a, 1)
    assert t.inode_for("vm/a") == a
    t.forget(a, 1)
    assert t.find("vm/a") is None
    assert t.inode_for("vm/a") != a


def test_inode_open_keeps_it_after_forget_and_unlink():
    t = InodeTable()
    a = t.inode_for("vm/a")
    t.add_lookup(a)
    t.opened(a)
    t.unlink("vm/a")
    t.forget(a, 1)
    assert t.node(a).unlinked and t.find("vm/a") is None
    b = t.inode_for("vm/a")
    assert b != a
    t.closed(a)
    with pytest.raises(KeyError):
        t.node(a)


def test_rename_moves_subtree_and_unlinks_target():
    t = InodeTable()
    d, f, g, old = (t.inode_for(p) for p in ("vm/d", "vm/d/f", "vm/d/e/g", "vm/x"))
    for i in (d, f, g, old):
        t.add_lookup(i)
    t.rename("vm/d", "vm/x")
    assert (t.path(d), t.path(f), t.path(g)) == ("vm/x", "vm/x/f", "vm/x/e/g")
    assert t.node(old).unlinked
    assert t.find("vm/d/f") is None
    assert is_under("vm/x/f", "vm/x") and not is_under("vm/xy", "vm/x")


# --- metadata cache ----------------------------------------------------------------------------------------
def test_cache_listing_negative_and_own_changes():
    c = MetaCache(attr_ttl=60, dir_ttl=60)
    assert c.lookup("vm/d/a") == (False, None)
    c.put_listing("vm/d", [F("a", 1), F("b", 2)])
    assert c.lookup("vm/d/a")[1].size == 1
    assert c.lookup("vm/d/zz") == (True, None)  # absent from a fresh listing: negative
    c.put("vm/d/zz", F("zz", 3))  # we created it
    assert c.lookup("vm/d/zz")[1].size == 3 and "zz" in c.listing("vm/d")
    c.update("vm/d/a", permissions=0o600)
    assert c.lookup("vm/d/a")[1].permissions == 0o600 and c.listing("vm/d")["a"].permissions == 0o600
    c.remove_tree("vm/d/a")
    assert c.lookup("vm/d/a") == (True, None) and "a" not in c.listing("vm/d")


def test_cache_rename_drops_subtree_and_ttl_expires():
    c = MetaCache(attr_ttl=0.2, dir_ttl=0.2)
    c.put_listing("vm/d", [F("a")])
    c.put("vm/d/a", F("a", 5))
    c.put_listing("vm/e", [])
    c.rename("vm/d", "vm/e", GuestFileInfo(name="e", type=FileType.DIRECTORY))
    assert c.listing("vm/d") is None and c.lookup("vm/d") == (True, None)
    assert c.lookup("vm/e")[1].is_dir and c.listing("vm/e") is None
    time.sleep(0.3)
    assert c.lookup("vm/e") == (False, None)


def test_what_a_link_was_given_outlives_guest_answers_until_attr_ttl_and_follows_our_changes():
    c = MetaCache(attr_ttl=0.3, dir_ttl=60)
    link = GuestFileInfo(name="l", type=FileType.SYMLINK, mtime=7.0, atime=7.0, uid=5, gid=5,
                         symlink_target="t")  # the target's
    c.put_link_own("vm/d/l", link, mtime=1000.0, atime=None, uid=0, gid=0)
    c.put_listing("vm/d", [link])  # a fresh listing reports the target's again: what we set still holds
    assert c.link_own("vm/d/l") == {"mtime": 1000.0, "uid": 0, "gid": 0}
    c.put_link_own("vm/d/l", link, uid=33)  # added to what it was given before
    assert c.link_own("vm/d/l") == {"mtime": 1000.0, "uid": 33, "gid": 0}
    c.rename("vm/d/l", "vm/d/m", link)  # a rename keeps it
    assert c.link_own("vm/d/l") == {} and c.link_own("vm/d/m") == {"mtime": 1000.0, "uid": 33, "gid": 0}
    c.put("vm/d/m", link)  # something new made at that name
    assert c.link_own("vm/d/m") == {}
    for drop in (lambda: c.forget("vm/d/m"), lambda: c.remove_tree("vm/d"), lambda: c.drop_tree("vm")):
        c.put_link_own("vm/d/m", link, mtime=1000.0, atime=1000.0)
        drop()
        assert c.link_own("vm/d/m") == {}
    c.put_link_own("vm/d/m", link, mtime=1000.0, atime=1000.0)
    time.sleep(0.4)
    assert c.link_own("vm/d/m") == {}  # after attr_ttl only the guest's record (the target's) is left


def test_a_record_expiring_between_two_clock_reads_never_raises_out_of_the_cache(monkeypatch):
    """cachetools' TTLCache reads its clock at each access: a record that expired between `in` and `[]`, between
    `get` and `[]`, or between collecting a subtree's keys and deleting them raised KeyError out of the cache,
    which a handler turned into ENOENT (for a rename the guest had made). A clock that moves on at every read
    puts the expiry between any two of them: each answer is whole, before or after the expiry."""
    from types import SimpleNamespace

    from guestfs_mount.fs import metacache

    now = [0.0]

    def tick():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(metacache, "time", SimpleNamespace(monotonic=tick, time=time.time))
    d, a = GuestFileInfo(name="d", type=FileType.DIRECTORY), F("a", 1)
    for ttl in (1.5, 2.5, 3.5, 4.5, 5.5, 6.5):
        for offset in range(8):
            for act in (lambda c: c.lookup("vm/d/a"), lambda c: c.dir_changed("vm/d"),
                        lambda c: c.remove_tree("vm/d"), lambda c: c.drop_tree("vm/d"),
                        lambda c: c.rename("vm/d", "vm/e", d)):
                c = metacache.MetaCache(attr_ttl=ttl, dir_ttl=ttl)
                c.put_listing("vm/d", [a])
                c.put("vm/d", d, ours=False)
                c.put("vm/d/a", a, ours=False)  # a record over the listing's
                for _ in range(offset):
                    tick()
                act(c)  # never a KeyError
                assert c.lookup("vm/d/a") in ((True, a), (True, None), (False, None))


def test_incomplete_records():
    assert not is_complete(F("a", 1))
    assert is_complete(F("a", 1, permissions=0o644, uid=0, gid=0, mtime=1.0))


# --- operations, no kernel -----------------------------------------------------------------------------------
@pytest.fixture
def guest_root(tmp_path):
    (tmp_path / "vms" / "vm1").mkdir(parents=True)
    return tmp_path / "vms"


def make_ops(tmp_path, guest: LocalGuest) -> GuestOperations:
    settings = MountSettings(spool_dir=tmp_path / "spool", recovery_dir=tmp_path / "rec", attr_ttl=5, dir_ttl=5)
    return GuestOperations(guest, lambda vm: GuestCredentials("root", "vmware"), settings)


async def lookup_path(ops: GuestOperations, path: str) -> int:
    inode = pyfuse3.ROOT_INODE
    for name in path.split("/"):
        inode = (await ops.lookup(inode, name.encode())).st_ino
    return inode


async def test_readers_share_one_download_and_last_close_cancels(tmp_path, guest_root):
    data = os.urandom(4 << 20)
    (guest_root / "vm1" / "big").write_bytes(data)
    guest = LocalGuest(guest_root, chunk=64 * 1024, delay=0.02)  # ~3 MiB/s: slow enough to watch
    ops = make_ops(tmp_path, guest)
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        inode = await lookup_path(ops, "vm1/big")
        a = (await ops.open(inode, os.O_RDONLY, None)).fh
        b = (await ops.open(inode, os.O_RDONLY, None)).fh
        assert guest.calls["InitiateFileTransferFromGuest"] == 0  # not at open
        t0 = trio.current_time()
        assert await ops.read(a, 0, 100) == data[:100]
        assert trio.current_time() - t0 < 1.0  # the first bytes do not wait for the whole file
        assert await ops.read(b, 100_000, 1000) == data[100_000:101_000]
        assert guest.calls["InitiateFileTransferFromGuest"] == 1
        spool = ops.handles.files[inode].spool
        await ops.release(a)
        assert spool.downloading
        await ops.release(b)
        await trio.sleep(0.1)
        assert not spool.downloading and not spool.complete and spool.have < len(data)
        assert not spool.path.exists()
        assert list((tmp_path / "spool").iterdir()) == []


async def test_failed_download_fails_readers_with_its_errno(tmp_path, guest_root):
    from guestfs_mount.vsphere.faults import VMUnavailableError

    (guest_root / "vm1" / "f").write_bytes(b"x" * 300_000)
    guest = LocalGuest(guest_root, chunk=64 * 1024)
    ops = make_ops(tmp_path, guest)
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        inode = await lookup_path(ops, "vm1/f")
        fh = (await ops.open(inode, os.O_RDONLY, None)).fh
        guest.faults = {}
        orig = guest.open_read

        async def failing(*a):
            raise VMUnavailableError("off")

        guest.open_read = failing
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.read(fh, 0, 10)
        assert e.value.errno == errno.EHOSTDOWN
        await ops.release(fh)
        guest.open_read = orig
        fh = (await ops.open(inode, os.O_RDONLY, None)).fh
        assert await ops.read(fh, 299_990, 100) == b"x" * 10
        await ops.release(fh)


async def test_create_write_flush_upload_and_errors_map(tmp_path, guest_root):
    guest = LocalGuest(guest_root)
    ops = make_ops(tmp_path, guest)
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        vm = await lookup_path(ops, "vm1")
        fi, attrs = await ops.create(vm, b"new", 0o640, os.O_WRONLY | os.O_CREAT | os.O_EXCL, None)
        assert await ops.write(fi.fh, 0, b"hello") == 5
        assert (await ops.getattr(attrs.st_ino)).st_size == 5  # own write visible before upload
        assert guest.calls["InitiateFileTransferToGuest"] == 0
        await ops.flush(fi.fh)
        await ops.release(fi.fh)
        assert guest.calls["InitiateFileTransferToGuest"] == 1
        assert (guest_root / "vm1" / "new").read_bytes() == b"hello"
        assert (guest_root / "vm1" / "new").stat().st_mode & 0o777 == 0o640
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.create(vm, b"new", 0o640, os.O_WRONLY | os.O_CREAT | os.O_EXCL, None)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(vm, b"missing")
        assert e.value.errno == errno.ENOENT
        before = guest.calls["ListFilesInGuest"]
        with pytest.raises(pyfuse3.FUSEError):
            await ops.lookup(vm, b"missing")
        assert guest.calls["ListFilesInGuest"] == before  # negative entry cached

        async def boom(*a, **k):
            raise RuntimeError("a bug")

        guest.stat = boom
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(vm, b"other")
        assert e.value.errno == errno.EIO  # unexpected errors become EIO, never escape


# --- VMs and guest paths -----------------------------------------------------------------------------------
class _Inventory:
    def __init__(self, vms):
        self.vms = vms
        self.calls = 0

    async def list_vms(self):
        self.calls += 1
        return self.vms


async def test_guest_paths_linux_windows_and_unavailable_vms(tmp_path):
    from guestfs_mount.fs.vms import VMDirectory
    from guestfs_mount.vsphere.model import VMInfo

    inv = _Inventory([
        VMInfo("vm-1", "lin", "poweredOn", "linuxGuest", True),
        VMInfo("vm-2", "win", "poweredOn", "windowsGuest", True),
        VMInfo("vm-3", "off", "poweredOff", "linuxGuest", False),
        VMInfo("vm-4", "nocreds", "poweredOn", "linuxGuest", True),
        VMInfo("vm-5", "hidden", "poweredOn", "linuxGuest", True),
    ])
    settings = MountSettings(spool_dir=tmp_path, recovery_dir=tmp_path, windows_drives=("C:", "D:"),
                             only_vms=("lin", "win", "off", "nocreds"))
    creds = GuestCredentials("root", "vmware")
    d = VMDirectory(inv, lambda name: None if name == "nocreds" else creds, settings)
    assert sorted(await d.vms()) == ["lin", "nocreds", "off", "win"]
    t = await d.target("lin/etc/hosts")
    assert (t.vm.id, t.guest_path, t.creds) == ("vm-1", "/etc/hosts", creds)
    assert (await d.target("lin/")).guest_path == "/"
    assert (await d.target("win/C:/Windows/win.ini")).guest_path == "C:\\Windows\\win.ini"
    assert (await d.target("win/D:")).guest_path == "D:\\"
    assert await d.is_drive("win/C:") and not await d.is_drive("lin/C:")
    for path, err in [("win/E:/x", errno.ENOENT), ("off/x", errno.EHOSTDOWN), ("nocreds/x", errno.EACCES),
                      ("hidden/x", errno.ENOENT), ("absent/x", errno.ENOENT)]:
        with pytest.raises(pyfuse3.FUSEError) as e:
            await d.target(path)
        assert e.value.errno == err, path
    calls = inv.calls
    await d.target("lin/x")
    assert inv.calls == calls  # the VM list is cached


async def test_concurrent_listings_of_one_directory_share_one_call(tmp_path, guest_root):
    for i in range(10):
        (guest_root / "vm1" / f"f{i}").touch()
    guest = LocalGuest(guest_root)
    ops = make_ops(tmp_path, guest)
    orig = guest.list_dir

    async def slow_list(*a):
        await trio.sleep(0.2)
        async for e in orig(*a):
            yield e

    guest.list_dir = slow_list
    results = []
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        for _ in range(5):
            nursery.start_soon(lambda: _append(results, ops._listing("vm1")))
    assert [len(r) for r in results] == [10] * 5
    assert guest.calls["ListFilesInGuest"] == 1


async def _append(results, coro):
    results.append(await coro)
