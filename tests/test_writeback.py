"""The write-back queue (`[mount] write_back = true`, fs/writeback.py) on real mounts: close returns before the
upload, what the mount shows is the latest state meanwhile, `guestfs-mount sync` waits for the uploads and
reports failures, fsync waits and returns the upload's errno, the bound blocks writers, a stop or a kill loses
nothing, and renames, chmods and unlinks right after close end with the guest in the right state."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.helpers.commands import guestfs_mount
from tests.helpers.mounting import is_mounted, wait_until
from tests.helpers.mountfs import VM, mounted_guestfs

WRITE_BACK = "write_back = true\n"


def sync(m, *paths) -> subprocess.CompletedProcess:
    return guestfs_mount("sync", m.mp, *paths, timeout=60)


def test_close_returns_before_the_upload_and_sync_waits_for_it(tmp_path, state_home):
    # a long delay: nothing starts by itself while the test looks
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 30\n") as m:
        data = os.urandom(100_000)
        (m.vm / "new").write_bytes(data)
        os.chmod(m.vm / "new", 0o640)
        os.utime(m.vm / "new", (1_600_000_000, 1_600_000_000))
        assert not (m.guest / "new").exists()  # close returned; the upload waits in the queue
        st = os.stat(m.vm / "new")  # the mount shows the latest state meanwhile
        assert (st.st_size, st.st_mode & 0o7777, int(st.st_mtime)) == (100_000, 0o640, 1_600_000_000)
        assert (m.vm / "new").read_bytes() == data
        assert "new" in os.listdir(m.vm)
        status = guestfs_mount("status", m.mp, "--json")
        assert '"pending"' in status.stdout and f"{VM}/new" in status.stdout, status.stdout
        m.reset_stats()
        done = sync(m)
        assert done.returncode == 0, done.stderr
        assert (m.guest / "new").read_bytes() == data
        gst = os.stat(m.guest / "new")
        assert (gst.st_mode & 0o7777, int(gst.st_mtime)) == (0o640, 1_600_000_000)
        calls = m.stats()
        print(f"\none new file, chmod and utime after close, then sync: {calls}")
        # mode and times rode on the initiate: no ChangeFileAttributes
        assert calls.get("InitiateFileTransferToGuest") == 1 and not calls.get("ChangeFileAttributesInGuest"), calls


def _tree(root, n: int = 20) -> dict[str, bytes]:
    files = {f"d{i % 3}/f{i:03d}.txt": os.urandom(4096) for i in range(n)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.chmod(root / rel, 0o600 + (i := int(rel[-7:-4])) % 8 * 0o10)
        os.utime(root / rel, (1_500_000_000 + i, 1_500_000_000 + i))
    return files


@pytest.mark.parametrize("api", ["vi-json", "rest"])
def test_rsync_into_the_guest_lands_whole_after_sync_and_a_second_rsync_uploads_nothing(tmp_path, state_home, api):
    src = tmp_path / "src"
    files = _tree(src)
    with mounted_guestfs(tmp_path, api, mount_config=WRITE_BACK) as m:
        m.reset_stats()
        subprocess.run(["rsync", "-a", f"{src}/", f"{m.vm}/site/"], check=True, timeout=120)
        done = sync(m)
        assert done.returncode == 0, done.stderr
        calls = m.stats()
        for rel, data in files.items():
            local, guest = os.stat(src / rel), os.stat(m.guest / "site" / rel)
            assert (m.guest / "site" / rel).read_bytes() == data, rel
            assert (guest.st_mode & 0o7777, int(guest.st_mtime)) == (local.st_mode & 0o7777, int(local.st_mtime)), rel
        assert not [p for p in (m.guest / "site").rglob(".*")], "temp names left on the guest"
        per_file = {k: v / len(files) for k, v in calls.items()}
        print(f"\nrsync -a of {len(files)} files with write_back ({api}): calls per file {per_file}")
        # initiate + PUT per file, to the final name (the rename came first), its times and mode on the initiate;
        # the rest is per directory (mkdir, its mode, rsync's times and mode at the end) and the first owner stat
        assert calls.get("InitiateFileTransferToGuest") == calls.get("guestFile.PUT") == len(files), calls
        assert not calls.get("MoveFileInGuest") and calls.get("ChangeFileAttributesInGuest", 0) <= 3 * 4, calls
        m.reset_stats()
        again = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{m.vm}/site/"], check=True,
                               timeout=120, capture_output=True, text=True)
        assert sync(m).returncode == 0
        assert not [line for line in again.stdout.splitlines() if line.startswith(">f")], again.stdout
        assert not any("PUT" in k or "Initiate" in k for k in m.stats()), m.stats()


@pytest.mark.parametrize("delay", [0, 30])
def test_write_rename_chmod_unlink_in_quick_succession_leave_the_guest_right(tmp_path, state_home, delay):
    """Changes right after close, to files whose upload is queued (delay 30) or in flight (delay 0, slow
    uploads): the guest ends with each file's last state, under its last name, and nothing under the old ones."""
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + f"write_back_delay = {delay}\n") as m:
        if delay == 0:
            m.sim.throttle(VM, 512 << 10)
        a, b = os.urandom(300_000), os.urandom(200_000)
        (m.vm / "a").write_bytes(a)
        os.rename(m.vm / "a", m.vm / "a2")
        os.chmod(m.vm / "a2", 0o604)
        (m.vm / "b").write_bytes(b)
        os.unlink(m.vm / "b")
        (m.vm / "c").write_bytes(b"first")
        (m.vm / "c").write_bytes(b"second, longer")
        os.mkdir(m.vm / "d")
        (m.vm / "d" / "x").write_bytes(a)
        os.rename(m.vm / "d", m.vm / "e")
        with pytest.raises(OSError) as e:
            os.rmdir(m.vm / "e")
        assert e.value.errno == errno.ENOTEMPTY
        (m.vm / "t").write_bytes(a)  # its upload queued, or in flight,
        (m.vm / "t.new").write_bytes(b"replacement")
        os.rename(m.vm / "t.new", m.vm / "t")  # when this replaces it: the guest must end with the replacement
        assert sorted(os.listdir(m.vm)) == ["a2", "c", "e", "t"]
        assert (m.vm / "e" / "x").read_bytes() == a and (m.vm / "c").read_bytes() == b"second, longer"
        done = sync(m)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in m.guest.iterdir()) == ["a2", "c", "e", "t"]
        assert (m.guest / "t").read_bytes() == b"replacement"
        assert (m.guest / "a2").read_bytes() == a and os.stat(m.guest / "a2").st_mode & 0o777 == 0o604
        assert (m.guest / "c").read_bytes() == b"second, longer"
        assert (m.guest / "e" / "x").read_bytes() == a
        m.sim.throttle(VM, 0)
        assert "Traceback" not in m.log()


def test_a_queued_file_renamed_over_a_guest_file_leaves_the_old_one_whole_until_its_upload(tmp_path, state_home):
    """rsync's pattern over an existing file (write a temp name, close, rename over): the guest's file must never be
    missing nor partial while the new content waits in the queue, and a failed upload leaves the old content."""
    def setup(vm1):
        (vm1 / "etc").mkdir()
        (vm1 / "etc" / "app.conf").write_text("old\n")
        (vm1 / "etc" / "other.conf").write_text("old other\n")

    with mounted_guestfs(tmp_path, setup=setup, mount_config=WRITE_BACK + "write_back_delay = 30\n") as m:
        etc = m.vm / "etc"
        assert (etc / "app.conf").read_text() == "old\n"
        (etc / ".app.conf.XYZ").write_text("new content\n")
        os.rename(etc / ".app.conf.XYZ", etc / "app.conf")
        assert (etc / "app.conf").read_text() == "new content\n"  # the mount: the latest state
        assert sorted(os.listdir(etc)) == ["app.conf", "other.conf"]
        assert (m.guest / "etc/app.conf").read_text() == "old\n"  # the guest: the old file, whole, until the upload
        assert not (m.guest / "etc/.app.conf.XYZ").exists()
        done = sync(m)
        assert done.returncode == 0, done.stderr
        assert (m.guest / "etc/app.conf").read_text() == "new content\n"
        assert sorted(p.name for p in (m.guest / "etc").iterdir()) == ["app.conf", "other.conf"]

        # an upload that fails for good: the guest keeps the old file, the new bytes go to the recovery directory
        m.fault("InitiateFileTransferToGuest", "NoDiskSpace", 1)
        (etc / ".other.conf.XYZ").write_text("newer other\n")
        os.rename(etc / ".other.conf.XYZ", etc / "other.conf")
        done = sync(m)
        assert done.returncode == 1 and "other.conf" in done.stdout + done.stderr
        assert (m.guest / "etc/other.conf").read_text() == "old other\n"
        assert [p.read_text() for p in (tmp_path / "recovered").rglob("other.conf*")] == ["newer other\n"]


def test_a_new_write_while_the_upload_is_in_flight_comes_after_it(tmp_path, state_home):
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 0\n") as m:
        m.sim.throttle(VM, 256 << 10)
        first, second = os.urandom(512 << 10), os.urandom(100_000)
        (m.vm / "f").write_bytes(first)
        assert wait_until(lambda: "uploading" in guestfs_mount("status", m.mp, "--json").stdout, 10)
        (m.vm / "f").write_bytes(second)  # waits for the upload in flight, then is queued itself
        assert (m.vm / "f").read_bytes() == second and os.stat(m.vm / "f").st_size == len(second)
        assert sync(m).returncode == 0
        assert (m.guest / "f").read_bytes() == second
        m.sim.throttle(VM, 0)


def test_fsync_waits_for_the_upload_and_returns_its_error(tmp_path, state_home):
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 30\n") as m:
        (m.vm / "ok").write_bytes(b"queued")
        fd = os.open(m.vm / "ok", os.O_RDONLY)
        try:
            os.fsync(fd)  # the queued upload, now
            assert (m.guest / "ok").read_bytes() == b"queued"
        finally:
            os.close(fd)
        # the background upload fails for good while the program still holds the file open: fsync says so
        m.fault("InitiateFileTransferToGuest", "NoDiskSpace", 1)
        fd = os.open(m.vm / "full", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"no room")
            os.close(os.dup(fd))  # a close: queued
            assert sync(m).returncode == 1
            with pytest.raises(OSError) as e:
                os.fsync(fd)
            assert e.value.errno == errno.ENOSPC
            os.fsync(fd)  # reported once
        finally:
            os.close(fd)
        kept = [p for p in m.recovered.rglob("full.*")]
        assert len(kept) == 1 and kept[0].read_bytes() == b"no room"


def test_sync_exit_codes_and_a_failed_upload_is_kept_and_reported_once(tmp_path, state_home):
    assert guestfs_mount("sync", tmp_path).returncode == 2  # no mount there
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 30\n") as m:
        (m.vm / "fine").write_bytes(b"fine")
        assert sync(m, m.vm / "fine").returncode == 0
        assert (m.guest / "fine").read_bytes() == b"fine"
        m.fault("InitiateFileTransferToGuest", "NoDiskSpace", 1)
        (m.vm / "lost").write_bytes(b"would have been lost")
        done = sync(m)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{VM}/lost" in lines[0] and "kept in" in lines[0], done.stderr
        kept = next(m.recovered.rglob("lost.*"))
        assert kept.read_bytes() == b"would have been lost" and str(kept) in lines[0]
        assert not (m.guest / "lost").exists()
        assert not (m.vm / "lost").exists()  # the mount's view is the guest's again
        status = guestfs_mount("status", m.mp)
        assert "failed" in status.stdout and f"{VM}/lost" in status.stdout, status.stdout
        assert sync(m).returncode == 0  # each failure is reported once
        assert guestfs_mount("sync", m.mp, tmp_path).returncode == 2  # not a path in the mount


def test_the_bound_blocks_a_writer_until_the_queue_has_room(tmp_path, state_home):
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 30\nwrite_back_max_mib = 1\n") as m:
        m.sim.throttle(VM, 512 << 10)
        data = {f"f{i}": os.urandom(600 << 10) for i in range(3)}
        took = {}
        for name, content in data.items():
            t0 = time.monotonic()
            (m.vm / name).write_bytes(content)
            took[name] = time.monotonic() - t0
        print(f"\nclose with a 1 MiB bound, 600 KiB files, uploads at 512 KiB/s: {took}")
        # f0 and f1 queue at once (delay 30: nothing would start); f2 waits until an upload has made room
        assert took["f0"] < 1 and took["f1"] < 1 and took["f2"] > 0.8, took
        assert (m.guest / "f0").exists() or (m.guest / "f1").exists()
        assert sync(m).returncode == 0
        for name, content in data.items():
            assert (m.guest / name).read_bytes() == content
        m.sim.throttle(VM, 0)


def test_sigterm_uploads_the_queue_and_sigkill_keeps_it_for_the_next_start(tmp_path):
    data = {f"f{i}": os.urandom(10_000) for i in range(3)}
    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 60\n") as m:
        for name, content in data.items():
            (m.vm / name).write_bytes(content)
        assert not any((m.guest / n).exists() for n in data)
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(timeout=30)
        assert m.proc.returncode == 0 and not is_mounted(m.mp)
        for name, content in data.items():
            assert (m.guest / name).read_bytes() == content
    assert not (tmp_path / "recovered").exists()

    with mounted_guestfs(tmp_path, mount_config=WRITE_BACK + "write_back_delay = 60\n") as m:
        for name, content in data.items():
            (m.vm / f"k{name}").write_bytes(content)
        os.rename(m.vm / "kf0", m.vm / "renamed")
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=10)
        subprocess.run(["fusermount3", "-u", str(m.mp)], check=True, timeout=30)
    assert not any((tmp_path / "vms" / VM / f"k{n}").exists() for n in data)
    with mounted_guestfs(tmp_path) as m:
        for name, content in data.items():
            rel = "renamed" if name == "f0" else f"k{name}"
            kept = list(m.recovered.glob(f"{VM}/{rel}.*"))
            assert len(kept) == 1 and kept[0].read_bytes() == content, (rel, m.log()[-2000:])


def test_write_back_off_uploads_at_close_as_before(tmp_path, state_home):
    with mounted_guestfs(tmp_path) as m:
        (m.vm / "f").write_bytes(b"at close")
        assert (m.guest / "f").read_bytes() == b"at close"  # close waited for the upload
        assert sync(m).returncode == 0
        assert "write_back\": false" in guestfs_mount("status", m.mp, "--json").stdout


def test_sigterm_past_stop_timeout_keeps_the_queued_bytes_in_the_recovery_directory(tmp_path):
    data = os.urandom(512 << 10)
    config = WRITE_BACK + "write_back_delay = 60\nstop_timeout = 1\n"
    with mounted_guestfs(tmp_path, mount_config=config) as m:
        m.sim.throttle(VM, 64 << 10)  # 8 s for the upload: longer than stop_timeout
        (m.vm / "slow").write_bytes(data)
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(timeout=30)
        assert m.proc.returncode == 0 and not is_mounted(m.mp)
        m.sim.throttle(VM, 0)
        kept = list(m.recovered.glob(f"{VM}/slow.*"))
        assert len(kept) == 1 and kept[0].read_bytes() == data, m.log()[-2000:]
        assert f"upload of {VM}/slow failed (the mount stopped" in m.log()
        assert not (m.guest / "slow").exists() or (m.guest / "slow").read_bytes() == data


def test_sync_sends_the_chmod_and_touch_it_holds_and_reports_one_that_fails(tmp_path, state_home):
    """Without write_back, a chmod/touch right after an upload is held (attr_delay) to share one guest call; a sync
    must not return before it is on the guest (`rsync -a ... && guestfs-mount sync` then a check in the VM). The
    delay is long here, so only the sync sends them."""
    with mounted_guestfs(tmp_path, cache_config="attr_delay = 30\n") as m:
        (m.vm / "a").write_bytes(b"a")
        os.utime(m.vm / "a", (1_600_000_000, 1_600_000_000))
        os.chmod(m.vm / "a", 0o640)
        (m.vm / "b").write_bytes(b"b")
        os.utime(m.vm / "b", (1_600_000_100, 1_600_000_100))
        assert int(os.stat(m.guest / "a").st_mtime) != 1_600_000_000, "held: not on the guest before the sync"
        done = sync(m, m.vm / "a")  # only under the path given
        assert done.returncode == 0, done.stderr
        gst = os.stat(m.guest / "a")
        assert (gst.st_mode & 0o7777, int(gst.st_mtime)) == (0o640, 1_600_000_000)
        assert int(os.stat(m.guest / "b").st_mtime) != 1_600_000_100
        m.fault("ChangeFileAttributesInGuest", "NoPermission", 1)
        done = sync(m)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{VM}/b" in lines[0] and "chmod/touch" in lines[0], done.stderr
        assert sync(m).returncode == 0  # nothing held any more
