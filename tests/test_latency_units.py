"""Unit tests of the reads-at-latency parts: the content cache's bookkeeping (contentcache.py), a spool handed to
it and back (spool.py), start-up after a crash (leftovers.py), records of a long attribute pass living from its
end (MetaCache.restamp), the [cache] keys. tests/test_mount_prefetch.py drives the real mount."""

from __future__ import annotations

import os
import time

import trio

from guestfs_mount.fs.contentcache import ContentCache, cache_dir, download_key
from guestfs_mount.fs.leftovers import recover_leftovers
from guestfs_mount.fs.spool import Spool, sidecar_path
from guestfs_mount.vsphere.model import FileType, GuestFileInfo

OLD = 1_600_000_000.0


def rec(size: int, mtime: float = OLD) -> GuestFileInfo:
    return GuestFileInfo(name="f", type=FileType.FILE, size=size, mtime=mtime)


def copy(cache: ContentCache, data: bytes) -> str:
    part = cache.part()
    part.write_bytes(data)
    return part


def test_entries_are_valid_for_their_size_and_mtime_only(tmp_path):
    cache = ContentCache(tmp_path, 1 << 20)
    assert cache.add("vm/a", copy(cache, b"abc"), (3, OLD))
    assert cache.valid("vm/a", rec(3)) and not cache.valid("vm/b", rec(3))
    no_mtime = GuestFileInfo(name="a", type=FileType.FILE, size=3)  # a REST listing's record cannot tell
    assert not cache.valid("vm/a", no_mtime) and cache.holds("vm/a")
    assert not cache.valid("vm/a", rec(3, OLD + 1))  # changed on the guest: the copy goes
    assert not cache.holds("vm/a") and cache.bytes == 0 and list(cache.dir.iterdir()) == []


def test_take_hands_the_file_over_and_a_spool_adopts_it(tmp_path):
    cache = ContentCache(tmp_path, 1 << 20)
    cache.add("vm/a", copy(cache, b"hello"), (5, OLD))
    file, key = cache.take("vm/a", rec(5))
    assert key == (5, OLD) and not cache.holds("vm/a") and cache.bytes == 0
    spool = Spool.adopt(tmp_path, file, "vm/a")
    assert spool.complete and trio.run(spool.read, 0, 10) == b"hello" and not file.exists()
    assert spool.path.parent == tmp_path and spool.path.name.endswith(".spool")
    # whole and clean: given back without a copy, and the spool's close deletes nothing of it
    back = spool.surrender()
    assert back == spool.path
    cache.add("vm/a", back, (5, OLD))
    spool.close()
    assert cache.take("vm/a", rec(5)) is not None


def test_a_dirty_or_partial_spool_is_not_given_up(tmp_path):
    spool = Spool(tmp_path)
    assert spool.surrender() is None  # nothing downloaded
    spool.make_empty()
    spool.mark_dirty("vm/x")
    assert spool.surrender() is None  # unsaved bytes stay a spool (leftovers.py recovers them after a crash)
    spool.close()


def test_bounded_least_recently_used_out_first(tmp_path):
    cache = ContentCache(tmp_path, 10)
    for name in "abc":
        assert cache.add(f"vm/{name}", copy(cache, b"1234"), (4, OLD))
    assert not cache.holds("vm/a") and cache.holds("vm/b") and cache.holds("vm/c")
    assert cache.bytes == 8 and cache.evicted == 1
    file, _ = cache.take("vm/b", rec(4))  # used: the most recent once back
    cache.add("vm/b", file, (4, OLD))
    cache.add("vm/d", copy(cache, b"1234"), (4, OLD))
    assert cache.holds("vm/b") and not cache.holds("vm/c")
    assert not cache.add("vm/big", copy(cache, b"x" * 11), (11, OLD))  # larger than the whole cache
    assert len(list(cache.dir.iterdir())) == 2


def test_our_renames_deletes_and_touches_follow(tmp_path):
    cache = ContentCache(tmp_path, 1 << 20)
    for path in ("vm/d/a", "vm/d/e/b", "vm/x"):
        cache.add(path, copy(cache, b"1"), (1, OLD))
    cache.rename("vm/d", "vm/x", tree=True)  # a directory onto a file: the file's copy goes
    assert cache.holds("vm/x/a") and cache.holds("vm/x/e/b") and not cache.holds("vm/d/a")
    cache.retime("vm/x/a", OLD, OLD + 50)  # we set its mtime; the content is the same
    assert cache.valid("vm/x/a", rec(1, OLD + 50))
    cache.retime("vm/x/e/b", OLD + 1, OLD + 50)  # not the record the copy is of
    assert not cache.holds("vm/x/e/b")
    cache.add("vm/y", copy(cache, b"2"), (1, OLD))
    cache.rename("vm/x/a", "vm/y")  # a file onto a file
    assert cache.valid("vm/y", rec(1, OLD + 50)) and not cache.holds("vm/x/a")
    cache.drop("vm/y")
    cache.drop_tree("vm/x")
    assert cache.bytes == 0 and list(cache.dir.iterdir()) == []


def test_a_download_of_a_file_changed_within_the_last_seconds_is_not_kept():
    now = time.time()
    assert download_key(rec(3, int(now) - 10), now) == (3, float(int(now) - 10))
    assert download_key(rec(3, int(now)), now) is None  # a second change within this second would go unseen
    assert download_key(GuestFileInfo(name="f", type=FileType.FILE, size=3), now) is None  # no mtime


def test_a_zero_size_cache_keeps_nothing(tmp_path):
    cache = ContentCache(tmp_path, 0)
    assert not cache.enabled
    assert not cache.add("vm/a", copy(cache, b"1"), (1, OLD))
    assert cache.take("vm/a", rec(1)) is None


def test_leftover_cache_of_a_dead_process_goes_and_unsaved_spools_are_kept(tmp_path):
    spool_dir, recovery = tmp_path / "spool", tmp_path / "recovered"
    dead = 999_999  # above pid_max: never a running process
    leftover = cache_dir(spool_dir, dead)
    leftover.mkdir(parents=True)
    (leftover / "1").write_bytes(b"a guest file's copy")
    unsaved = spool_dir / f"{dead}-7.spool"
    unsaved.write_bytes(b"written, not uploaded")
    sidecar_path(unsaved).write_text('{"path": "vm1/etc/motd"}')
    mine_running = cache_dir(spool_dir, os.getppid())  # a live process's cache is left alone
    mine_running.mkdir()
    result = recover_leftovers(spool_dir, recovery)
    assert not leftover.exists() and mine_running.exists()
    [(path, kept)] = result.kept
    assert path == "vm1/etc/motd" and kept.read_bytes() == b"written, not uploaded"


def _settings(tmp_path, cache: str, vcenter: str = ""):
    import argparse

    from guestfs_mount.cli import mount as cli
    from guestfs_mount.config import load

    path = tmp_path / "config.toml"
    path.write_text(f'[vcenter]\nurl = "https://vc"\nusername = "u"\npassword_env = "X"\n{vcenter}'
                    f'[vms.default]\nusername = "root"\n[cache]\n{cache}')
    config = load(path)
    args = argparse.Namespace(read_only=False, allow_other=False, debug=False, vms=None)
    calls = int(config.vcenter.get("max_guest_calls_per_vm", 4))
    return cli.mount_settings_from(config, args, str(tmp_path), [], calls)


def test_cache_and_prefetch_keys(tmp_path):
    import pytest

    from guestfs_mount.config import ConfigError

    s = _settings(tmp_path, "content_max_mib = 64\ncontent_file_max_mib = 8\nprefetch_files = 0\nprefetch_max_kib = 16\n")
    assert (s.content_max_mib, s.content_file_max_mib, s.prefetch_files, s.prefetch_max_kib) == (64, 8, 0, 16)
    s = _settings(tmp_path, "")
    assert (s.content_max_mib, s.prefetch_files, s.prefetch_max_kib, s.guest_calls_per_vm) == (1024, 8, 1024, 4)
    # one guest call per VM leaves no slot to a prefetch: off
    s = _settings(tmp_path, "", vcenter="max_guest_calls_per_vm = 1\n")
    assert s.prefetch_files == 0 and s.guest_calls_per_vm == 1
    with pytest.raises(ConfigError, match=r"\[cache\] content_max_mib must be 0 or more"):
        _settings(tmp_path, "content_max_mib = -1\n")
    with pytest.raises(ConfigError, match=r"prefetch_files must be a whole number, 0 or more"):
        _settings(tmp_path, "prefetch_files = 1.5\n")


def test_a_pass_records_live_from_its_end_unless_we_changed_them():
    from guestfs_mount.fs.metacache import MetaCache

    cache = MetaCache(attr_ttl=0.2, dir_ttl=0.2)
    listing = cache.put_listing("vm/d", [GuestFileInfo(name=n, type=FileType.FILE, size=1) for n in "abc"])
    mark = cache.mark()
    records = {}
    for name in "abc":
        records[f"vm/d/{name}"] = rec(1)
        cache.put(f"vm/d/{name}", records[f"vm/d/{name}"], ours=False)
    time.sleep(0.25)  # the pass outlived both TTLs
    assert cache.lookup("vm/d/a") == (False, None)
    cache.put("vm/d/b", rec(2))  # our own change during the pass: ours stays
    cache.restamp("vm/d", listing, records, mark)
    assert cache.lookup("vm/d/a")[1] is records["vm/d/a"] and cache.lookup("vm/d/c")[1] is records["vm/d/c"]
    assert cache.lookup("vm/d/b")[1].size == 2
    assert cache.listing("vm/d") is None  # something in it changed since: the listing is asked again
    # a listing replaced meanwhile (asked again by someone): nothing of the pass is revived
    fresh = MetaCache(attr_ttl=60, dir_ttl=60)
    old = fresh.put_listing("vm/d", [GuestFileInfo(name="a", type=FileType.FILE, size=1)])
    new = fresh.put_listing("vm/d", [])
    fresh.restamp("vm/d", old, {"vm/d/a": rec(1)}, fresh.mark())
    assert fresh.listing("vm/d") is new and fresh.lookup("vm/d/a") == (True, None)
