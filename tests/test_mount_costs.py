"""What common programs cost in guest calls and kernel requests, on a real mount of the simulator: rsync of small
files, a chmod/touch right after an upload, lstat of names in a directory nobody listed, and the size of the
kernel's read and write requests. docs/performance.md has the figures these tests hold the product to."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.mountfs import mounted_guestfs
from tests.test_mount import calls, gm, run, sha256, work  # noqa: F401 (fixtures)

MiB = 1 << 20


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _attribute_calls(gm, directory: str) -> Counter:
    """ChangeFileAttributes calls the simulator logged for the files in guest `directory`, by file (rsync's temp
    name `.NAME.XXXXXX` counted as NAME)."""
    log = (gm.log_path.parent / "sim.log").read_text(errors="replace")
    paths = re.findall(r"op=ChangeFileAttributesInGuest vm=\S+ path='([^']*)'", log)
    return Counter(re.sub(r"^\.(.*)\.[^.]{6}$", r"\1", p[len(directory) + 1:])
                   for p in paths if p.startswith(directory + "/"))


def test_rsync_of_small_files_costs_at_most_four_calls_each(gm, work, tmp_path):
    mnt, guest = work
    src = tmp_path / "src"
    src.mkdir()
    n = 60
    for i in range(n):
        (src / f"f{i:03d}").write_bytes(os.urandom(4096))
        os.chmod(src / f"f{i:03d}", 0o640)
        os.utime(src / f"f{i:03d}", (1_600_000_000 + i, 1_600_000_000 + i))
    (mnt / "dst").mkdir()
    # dst with src's times, as an earlier run leaves it. rsync compares times in whole seconds and sets those of a
    # directory that differ before filling it, then again after: a dst made in the second after src's last file
    # cost one ChangeFileAttributes more (62 for 60 files, now and then in a loaded full run)
    os.utime(mnt / "dst", ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    gm.reset_stats()
    run("rsync", "-a", f"{src}/", f"{mnt}/dst/")
    stats = gm.stats()
    # each file's times and mode (rsync: utimensat after the close, then chmod, here through a handle of its own)
    # in one call; the simulator logs a call just after answering it
    dst = "/" + str((guest / "dst").relative_to(gm.guest))
    wait_until(lambda: sum(_attribute_calls(gm, dst).values()) >= n, timeout=5)
    per_file = _attribute_calls(gm, dst)
    assert per_file == {f"f{i:03d}": 1 for i in range(n)}, {k: v for k, v in per_file.items() if v != 1} or per_file
    # initiate + PUT + one ChangeFileAttributes (rsync's times and mode together) + the rename into place; and
    # rsync's times on dst once it is filled
    assert calls(stats) / n <= 4.1, stats
    assert stats.get("ChangeFileAttributesInGuest", 0) <= n + 1, stats
    for i in (0, n // 2, n - 1):
        st = os.stat(guest / "dst" / f"f{i:03d}")
        assert stat.S_IMODE(st.st_mode) == 0o640 and int(st.st_mtime) == 1_600_000_000 + i
        assert sha256(guest / "dst" / f"f{i:03d}") == sha256(src / f"f{i:03d}")
    gm.reset_stats()
    assert "Number of regular files transferred: 0" in run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/dst/").stdout
    assert gm.stats().get("InitiateFileTransferToGuest", 0) == 0


def test_chmod_and_touch_right_after_an_upload_share_one_call(gm, work):
    mnt, guest = work
    (mnt / "f").write_bytes(b"data")
    gm.reset_stats()
    os.utime(mnt / "f", (1_500_000_000, 1_500_000_000))
    os.chmod(mnt / "f", 0o600)
    st = os.stat(mnt / "f")  # what the program set shows at once
    assert stat.S_IMODE(st.st_mode) == 0o600 and int(st.st_mtime) == 1_500_000_000
    assert wait_until(lambda: stat.S_IMODE(os.stat(guest / "f").st_mode) == 0o600, timeout=5)
    assert int(os.stat(guest / "f").st_mtime) == 1_500_000_000
    assert gm.stats().get("ChangeFileAttributesInGuest", 0) == 1, gm.stats()


def test_a_listing_fetched_while_a_touch_is_held_shows_the_touch(gm, work):
    """rsync's second run re-sent a file now and then: a listing of the directory fetched while its utimes was
    held (the guest still had the upload's time) replaced the mount's record, and readdir gave the kernel the old
    mtime, before and after the held call was sent."""
    mnt, guest = work
    (mnt / "f").write_bytes(b"data")
    os.utime(mnt / "f", (1_500_000_000, 1_500_000_000))  # held: the guest has the upload's time
    assert int(os.stat(guest / "f").st_mtime) != 1_500_000_000
    subprocess.run(["ls", "-l", str(mnt)], check=True, capture_output=True)  # a fresh listing, as readdirplus
    assert int(os.stat(mnt / "f").st_mtime) == 1_500_000_000
    assert wait_until(lambda: int(os.stat(guest / "f").st_mtime) == 1_500_000_000, timeout=5)
    subprocess.run(["ls", "-l", str(mnt)], check=True, capture_output=True)
    assert int(os.stat(mnt / "f").st_mtime) == 1_500_000_000


def test_chmod_of_a_file_not_just_uploaded_reaches_the_guest_at_once(gm, work):
    mnt, guest = work
    (guest / "old").write_bytes(b"x")
    os.chmod(mnt / "old", 0o700)
    assert stat.S_IMODE(os.stat(guest / "old").st_mode) == 0o700


def test_a_held_chmod_moves_with_a_rename(gm, work):
    mnt, guest = work
    (mnt / "tmp").write_bytes(b"content")
    os.chmod(mnt / "tmp", 0o604)
    os.rename(mnt / "tmp", mnt / "final")
    assert wait_until(lambda: (guest / "final").exists()
                      and stat.S_IMODE(os.stat(guest / "final").st_mode) == 0o604, timeout=5)
    assert not (guest / "tmp").exists()


def test_lstat_of_many_unlisted_names_lists_the_directory_once(gm, work):
    mnt, guest = work
    for i in range(40):
        (guest / f"n{i}").write_bytes(b"x" * i)
    time.sleep(0.1)
    gm.reset_stats()
    sizes = [os.lstat(mnt / f"n{i}").st_size for i in range(40)]
    assert sizes == list(range(40))
    listing_calls = gm.stats().get("ListFilesInGuest", 0)
    if gm.api != "rest":  # a VI or SOAP listing has every attribute; a REST one lacks mode and times, so each is fetched
        assert listing_calls <= 4, gm.stats()  # the directory itself, two names, then one listing
    with pytest.raises(FileNotFoundError):
        os.lstat(mnt / "absent")


@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's read-ahead of a mount is set only by root")
def test_reads_and_writes_reach_the_mount_in_1_mib_requests(tmp_path):
    with mounted_guestfs(tmp_path) as m:
        (m.guest / "big").write_bytes(os.urandom(8 * MiB))
        st = os.stat(m.mp)
        knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
        assert knob.read_text().strip() == "1024"
        assert os.stat(m.vm / "big").st_blksize == MiB  # cp and cat size their buffers by it
        run("cp", m.vm / "big", tmp_path / "copy")
        run("cp", tmp_path / "copy", m.vm / "back")
        assert sha256(m.guest / "back") == sha256(m.guest / "big")
    line = re.search(r"largest write (\d+) bytes, largest read (\d+)", m.log())
    assert line, m.log()[-2000:]
    assert int(line[1]) == MiB and int(line[2]) == MiB, line[0]
