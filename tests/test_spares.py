"""The spare spool (guestfs_mount/fs/spares.py): the last clean spool's file, page cache and all, taken by the next
spool made empty. What must hold: nothing past the new content's length is ever read, sent, cached or recovered;
a gap written past the length reads as zeros; a crash recovers exactly the written bytes; an unused spare goes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import trio

from guestfs_mount.fs.leftovers import recover_leftovers
from guestfs_mount.fs.spares import SPARE_MIN, Spares
from guestfs_mount.fs.spool import Spool, sidecar_path
from tests.helpers.model import ModelSteps
from tests.helpers.mountfs import mounted_guestfs
from tests.test_status import status_json

OLD = b"stale spare bytes " * (SPARE_MIN // 18 + 1000)  # more than SPARE_MIN


def spare_in(spool_dir: Path) -> Spares:
    """Spares holding a closed, clean spool of OLD."""
    spares = Spares(spool_dir)
    spool = Spool(spool_dir, "old", spares=spares)
    spool.make_empty()
    spool.write(0, OLD)
    spool.close()
    assert spares.size == len(OLD) and spares.path.read_bytes() == OLD
    return spares


def sidecar(spool: Spool) -> dict:
    return json.loads(sidecar_path(spool.path).read_text())


def test_a_spool_made_empty_takes_the_spare_and_shows_only_its_own_bytes(tmp_path):
    spares = spare_in(tmp_path)
    spool = Spool(tmp_path, "new", spares=spares)
    spool.make_empty()
    assert spares.size == 0 and spares.taken == 1 and not spares.path.exists()
    assert os.fstat(spool.fd).st_size == len(OLD)  # the pages are the spare's
    assert spool.size() == 0 and trio.run(spool.read, 0, 100) == b""
    spool.mark_dirty("vm1/new")
    assert sidecar(spool) == {"path": "vm1/new", "length": 0}
    spool.write(0, b"hello")
    assert spool.size() == 5 and sidecar(spool)["length"] == 5  # updated in place at each write
    assert trio.run(spool.read, 0, 4096) == b"hello" and trio.run(spool.read, 3, 10) == b"lo"
    spool.write(5, b" world")
    assert sidecar(spool) == {"path": "vm1/new", "length": 11}
    spool.settle()  # what the content cache and the recovery directory get: the file cut to the content
    assert spool.path.read_bytes() == b"hello world" and sidecar(spool) == {"path": "vm1/new"}
    spool.write(11, b"!")  # no length any more: the file is the content
    assert spool.size() == 12 and sidecar(spool) == {"path": "vm1/new"}
    spool.close()
    assert not spool.path.exists() and not sidecar_path(spool.path).exists()
    assert spares.size == 0, "a spool closed with unsaved bytes is never a spare"


def test_a_write_past_the_content_leaves_zeros_not_the_spares_bytes(tmp_path):
    spares = spare_in(tmp_path)
    spool = Spool(tmp_path, "new", spares=spares)
    spool.make_empty()
    spool.write(0, b"ab")
    spool.write(1000, b"cd")
    assert spool.path.read_bytes() == b"ab" + b"\0" * 998 + b"cd"
    spool.truncate(2000)
    assert spool.path.read_bytes() == b"ab" + b"\0" * 998 + b"cd" + b"\0" * 998
    spool.close()


def test_a_truncate_cuts_the_spares_bytes_before_it_extends(tmp_path):
    spares = spare_in(tmp_path)
    spool = Spool(tmp_path, "new", spares=spares)
    spool.make_empty()
    spool.write(0, b"xyz")
    spool.truncate(10)
    assert spool.size() == 10 and spool.path.read_bytes() == b"xyz" + b"\0" * 7
    spool.close()


def test_the_content_cache_gets_the_file_cut_to_its_content(tmp_path):
    spares = spare_in(tmp_path)
    spool = Spool(tmp_path, "new", file_limit=1 << 20, spares=spares)
    spool.make_empty()
    spool.write(0, b"kept")
    file = spool.surrender()
    assert file is not None and file.read_bytes() == b"kept"


def test_a_spool_larger_than_the_cache_keeps_becomes_the_spare_instead(tmp_path):
    spares = Spares(tmp_path)
    spool = Spool(tmp_path, "big", file_limit=1 << 20, spares=spares)
    spool.make_empty()
    spool.write(0, OLD)
    assert spool.surrender() is None
    spool.close()
    assert spares.size == len(OLD)


def test_small_spools_are_not_kept_and_one_spare_at_most(tmp_path):
    spares = spare_in(tmp_path)
    small = Spool(tmp_path, "small", spares=spares)
    small.write(0, b"x" * 1000)
    small.complete = True
    small.close()
    assert not small.path.exists() and spares.size == len(OLD)
    other = Spool(tmp_path, "other", spares=spares)
    other.make_empty()  # takes the spare
    second = Spool(tmp_path, "second", spares=spares)
    second.make_empty()  # none left: an empty file of its own
    assert os.fstat(second.fd).st_size == 0 and second.length is None
    other.close()
    second.write(0, OLD)
    second.close()
    assert spares.size == len(OLD) and not second.path.exists(), "the spare slot was full: deleted"
    spares.drop()
    assert os.listdir(tmp_path) == []


def test_a_crash_recovers_exactly_the_written_bytes_of_a_spool_on_a_spare(tmp_path, dead_pid):
    """The dead process's files, as they are on disk when it dies: the spare's stale tail, the sidecar's length."""
    spool_dir, rec = tmp_path / "spool", tmp_path / "recovered"
    spool_dir.mkdir()
    spares = spare_in(tmp_path / "live")
    spool = Spool(tmp_path / "live", "new", spares=spares)
    spool.make_empty()
    spool.mark_dirty("vm1/srv/new")
    spool.write(0, b"the only copy")
    os.link(spool.path, spool_dir / f"{dead_pid}-7.spool")
    os.link(sidecar_path(spool.path), spool_dir / f"{dead_pid}-7.spool.path")
    result = recover_leftovers(spool_dir, rec)
    assert [p for p, _ in result.kept] == ["vm1/srv/new"]
    assert result.kept[0][1].read_bytes() == b"the only copy"
    spool.close()


def test_a_spare_nobody_takes_is_deleted(tmp_path):
    spares = spare_in(tmp_path)
    spares.idle = 0.1

    async def main():
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(spares.run)
                while spares.size:
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert spares.size == 0 and not spares.path.exists()


def test_files_written_one_after_another_reach_the_guest_exact(tmp_path, state_home):
    """cp of a large file, then of smaller ones: each later spool is the spare of the one before, and the guest,
    the mount and the content cache see each file's own bytes, never the tail of the file before. (Files up to
    content_file_max_mib go to the content cache at close, not to the spare: the limit is lowered to 4 MiB.)"""
    first = tmp_path / "first"
    first.write_bytes(os.urandom(12 << 20))
    second = tmp_path / "second"
    second.write_bytes(os.urandom(9 << 20) + b"end")
    third = tmp_path / "third"
    third.write_bytes(b"small\n")
    with mounted_guestfs(tmp_path / "m", cache_config="content_file_max_mib = 4\n") as gm:
        for src in (first, second, third):
            subprocess.run(["cp", src, gm.vm / src.name], check=True, timeout=60)
        for src in (first, second, third):
            assert (gm.guest_dir("vm1") / src.name).read_bytes() == src.read_bytes()
            assert (gm.vm / src.name).stat().st_size == src.stat().st_size
            assert (gm.vm / src.name).read_bytes() == src.read_bytes()
        figures = status_json(gm.mp)["figures"]
        assert figures["spare_spools_taken"] >= 2, figures
        subprocess.run(["cp", first, gm.vm / "again"], check=True, timeout=60)  # a spare once more
        with open(gm.vm / "gap", "wb") as f:  # which this spool takes: a sparse write on it
            f.write(b"a")
            f.seek(3 << 20)
            f.write(b"b")
        assert (gm.guest_dir("vm1") / "gap").read_bytes() == b"a" + b"\0" * ((3 << 20) - 1) + b"b"
        assert status_json(gm.mp)["figures"]["spare_spools_taken"] == figures["spare_spools_taken"] + 1


def test_no_spare_is_kept_on_a_filesystem_short_of_room(tmp_path, monkeypatch):
    """The space a spare holds is not there for another spool's download: kept only with ROOM times its size free."""
    real = os.statvfs

    def short(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, 4096, st.f_blocks, 1000, 1000, *tuple(st)[5:]))

    monkeypatch.setattr("guestfs_mount.fs.spares.os.statvfs", short)
    spares = Spares(tmp_path)
    spool = Spool(tmp_path, "big", spares=spares)
    spool.make_empty()
    spool.write(0, OLD)
    spool.close()
    assert spares.size == 0 and os.listdir(tmp_path) == []


SPARE_MODEL_SECONDS = 10.0


def test_random_operations_on_spares_match_a_local_model(tmp_path, state_home):
    """A randomized model test with the spare in play: before most opens a large file of 0xAA bytes is written and
    closed (it becomes the spare), then one file is opened anew (O_TRUNC: it takes the spare) or as it is, and
    random writes (some far past the end, over the spare's stale bytes), reads (through the writer and through a
    second reader), truncates and stats go to it and to a local model file at once. Every read, the guest's copy
    after each close and the mount's read after it must match the model: no byte of a spare ever shows."""
    import random

    seed = int(os.environ.get("GUESTFS_MODEL_SEED", "20261130"))
    rng = random.Random(seed)
    model = ModelSteps(rng, seed, far=6 << 20)
    model_path = tmp_path / "model"
    model_path.write_bytes(b"")
    donor = b"\xaa" * (SPARE_MIN + (1 << 20))

    with mounted_guestfs(tmp_path / "m", cache_config="content_file_max_mib = 4\n") as gm:
        guest = gm.guest_dir("vm1")
        (guest / "f").write_bytes(b"")
        opens = 0
        deadline = time.monotonic() + SPARE_MODEL_SECONDS
        while time.monotonic() < deadline or opens < 4:
            if rng.random() < 0.7:
                with open(gm.vm / "donor", "wb") as d:  # closed clean, larger than the cache keeps: the spare
                    d.write(donor)
                model.steps.append(("donor",))
            flags = rng.choice([os.O_RDWR | os.O_TRUNC, os.O_RDWR | os.O_TRUNC, os.O_RDWR, os.O_RDWR | os.O_APPEND])
            fd, md = os.open(gm.vm / "f", flags), os.open(model_path, flags)
            reader = os.open(gm.vm / "f", os.O_RDONLY) if rng.random() < 0.3 else None
            opens += 1
            model.steps.append(("open", flags, reader is not None))
            try:
                model.run(fd, md, rng.randint(1, 20), reader)
            finally:
                os.close(fd)
                os.close(md)
                if reader is not None:
                    os.close(reader)
            model.steps.append(("close",))
            want = model_path.read_bytes()
            model.check((guest / "f").read_bytes() == want, "guest copy after close")
            model.check((gm.vm / "f").read_bytes() == want, "mount's read after close")
        taken = status_json(gm.mp)["figures"]["spare_spools_taken"]
        assert taken >= 2, f"seed {seed}: the spare was taken {taken} times: the test did not test it"
        assert "Traceback" not in gm.log(), gm.log()[-3000:]
