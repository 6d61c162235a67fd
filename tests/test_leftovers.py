"""Spool files left by a dead mount (guestfs_mount/fs/leftovers.py), and the sidecar that names a dirty spool's guest
path (spool.py), on plain directories; the real SIGKILL is in test_mount_lifecycle.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess

import trio

from guestfs_mount.fs import recovery
from guestfs_mount.fs.leftovers import recover_leftovers
from guestfs_mount.fs.spool import Spool, sidecar_path


def leftover(spool_dir, pid, n, data: bytes, path: str | None):
    spool_dir.mkdir(parents=True, exist_ok=True)
    spool = spool_dir / f"{pid}-{n}.spool"
    spool.write_bytes(data)
    spool.chmod(0o600)
    if path is not None:
        sidecar_path(spool).write_text(json.dumps({"path": path}))
    return spool


def test_a_dirty_leftover_is_moved_under_its_guest_path_and_a_download_copy_is_deleted(tmp_path, dead_pid, caplog):
    spool_dir, rec = tmp_path / "spool", tmp_path / "recovered"
    leftover(spool_dir, dead_pid, 1, b"unsaved", "vm1/etc/app.conf")
    leftover(spool_dir, dead_pid, 2, b"x" * 1000, None)
    with caplog.at_level(logging.INFO, logger="guestfs_mount.fs.leftovers"):
        result = recover_leftovers(spool_dir, rec)
    assert [p for p, _ in result.kept] == ["vm1/etc/app.conf"]
    dest = result.kept[0][1]
    assert dest.parent == rec / "vm1" / "etc" and dest.name.startswith("app.conf.")
    assert dest.read_bytes() == b"unsaved" and dest.stat().st_mode & 0o777 == 0o600
    assert rec.stat().st_mode & 0o777 == 0o700
    assert (result.deleted, result.deleted_bytes) == (1, 1000)
    assert os.listdir(spool_dir) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "vm1/etc/app.conf" in errors[0] and str(dest) in errors[0], errors
    assert any("removed 1 leftover spool file(s) (1000 bytes)" in r.getMessage() for r in caplog.records)


def test_spools_of_a_running_process_are_left_alone(tmp_path):
    spool_dir, rec = tmp_path / "spool", tmp_path / "recovered"
    other = subprocess.Popen(["sleep", "30"])
    try:
        spool = leftover(spool_dir, other.pid, 1, b"theirs", "vm1/f")
        result = recover_leftovers(spool_dir, rec)
    finally:
        other.kill()
        other.wait(timeout=10)
    assert result.kept == [] and result.deleted == 0
    assert spool.read_bytes() == b"theirs" and sidecar_path(spool).exists()
    assert not rec.exists()


def test_our_own_pid_counts_as_a_dead_process(tmp_path):
    """A restarted container reuses pids: at start-up no spool of ours exists yet, so one with our pid is a
    leftover."""
    spool_dir = tmp_path / "spool"
    leftover(spool_dir, os.getpid(), 7, b"before the restart", "vm2/data")
    result = recover_leftovers(spool_dir, tmp_path / "recovered")
    assert [p for p, _ in result.kept] == ["vm2/data"]
    assert result.kept[0][1].read_bytes() == b"before the restart"


def test_a_sidecar_cannot_lead_out_of_the_recovery_directory(tmp_path, dead_pid):
    spool_dir, rec = tmp_path / "spool", tmp_path / "recovered"
    leftover(spool_dir, dead_pid, 1, b"a", "vm1/../../outside")
    leftover(spool_dir, dead_pid, 2, b"b", "/etc/passwd")
    leftover(spool_dir, dead_pid, 3, b"c", None)
    sidecar_path(spool_dir / f"{dead_pid}-3.spool").write_text("not json")  # a name lost: the bytes are not
    result = recover_leftovers(spool_dir, rec)
    assert len(result.kept) == 3
    for _, dest in result.kept:
        assert dest.resolve().is_relative_to(rec.resolve()), dest
    assert sorted(d.read_bytes() for _, d in result.kept) == [b"a", b"b", b"c"]
    assert not (tmp_path / "outside").exists()
    assert os.listdir(spool_dir) == []


def test_an_orphan_sidecar_is_removed_and_other_files_are_not_touched(tmp_path, dead_pid):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / f"{dead_pid}-4.spool.path").write_text(json.dumps({"path": "vm1/gone"}))
    (spool_dir / "notes.txt").write_text("not a spool")
    result = recover_leftovers(spool_dir, tmp_path / "recovered")
    assert result.kept == [] and result.deleted == 0
    assert os.listdir(spool_dir) == ["notes.txt"]


def test_a_leftover_that_cannot_be_moved_stays(tmp_path, dead_pid, caplog):
    spool_dir = tmp_path / "spool"
    spool = leftover(spool_dir, dead_pid, 1, b"keep me", "vm1/f")
    blocker = tmp_path / "recovered"
    blocker.write_text("a file where the recovery directory should be")
    result = recover_leftovers(spool_dir, blocker)
    assert result.failed == 1 and spool.read_bytes() == b"keep me" and sidecar_path(spool).exists()
    assert any("could not be moved" in r.getMessage() for r in caplog.records)


def test_keep_copies_or_moves_privately(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"bytes")
    copy = recovery.keep(tmp_path / "rec", "vm1/a/b", src)
    assert copy.read_bytes() == b"bytes" and src.exists()
    moved = recovery.keep(tmp_path / "rec", "vm1/a/b", src, move=True)
    assert moved != copy and moved.read_bytes() == b"bytes" and not src.exists()
    assert {copy.stat().st_mode & 0o777, moved.stat().st_mode & 0o777} == {0o600}


def test_the_sidecar_lives_while_the_spool_holds_unsaved_bytes(tmp_path):
    async def main():
        spool = Spool(tmp_path)
        side = sidecar_path(spool.path)
        assert not side.exists()
        spool.mark_dirty("vm1/f")
        assert json.loads(side.read_text()) == {"path": "vm1/f"} and side.stat().st_mode & 0o777 == 0o600
        spool.mark_dirty("vm1/g")  # a rename
        assert json.loads(side.read_text()) == {"path": "vm1/g"}
        spool.mark_clean()
        assert not side.exists()
        spool.mark_dirty("vm1/g")
        spool.close()
        assert not side.exists() and not spool.path.exists()
        assert os.listdir(tmp_path) == []

    trio.run(main)


def test_a_new_spool_never_truncates_a_leftover_with_our_pid(tmp_path):
    async def main():
        first = Spool(tmp_path)
        n = int(first.path.stem.split("-")[1])
        taken = [tmp_path / f"{os.getpid()}-{n + i}.spool" for i in (1, 2)]
        for p in taken:
            p.write_bytes(b"an earlier life's bytes")
        second = Spool(tmp_path)
        assert second.path not in taken
        assert all(p.read_bytes() == b"an earlier life's bytes" for p in taken)
        first.close()
        second.close()

    trio.run(main)
