"""`guestfs-mount refresh MOUNTPOINT [PATH]` and SIGHUP on a real mount: a change made inside the guest shows at
once instead of after the TTLs, and only what was asked for is forgotten."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.commands import guestfs_mount
from tests.helpers.mounting import wait_until
from tests.helpers.mountfs import mounted_guestfs

LONG = 300.0  # TTLs no test outlasts: only a refresh can make the mount ask again


def refresh(*args, cwd=None) -> subprocess.CompletedProcess:
    return guestfs_mount("refresh", *args, cwd=cwd)


def guest_calls(m) -> int:
    return sum(m.stats().values())


def setup(vm1: Path) -> None:
    (vm1 / "etc").mkdir()
    (vm1 / "etc/hosts").write_text("127.0.0.1 old\n")
    (vm1 / "etc/motd").write_text("same size A\n")
    (vm1 / "var").mkdir()
    (vm1 / "var/log").write_text("log\n")


def change_keeping_size_and_mtime(path: Path, text: str) -> None:
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_refresh_of_a_directory_shows_guest_changes_and_keeps_the_rest_cached(tmp_path, state_home, api):
    with mounted_guestfs(tmp_path, api, attr_ttl=LONG, dir_ttl=LONG, setup=setup) as m:
        etc = m.vm / "etc"
        assert (etc / "hosts").read_text() == "127.0.0.1 old\n"
        assert (etc / "motd").read_text() == "same size A\n"
        assert sorted(os.listdir(etc)) == ["hosts", "motd"]
        assert not (etc / "new").exists()  # a negative entry now
        assert os.listdir(m.vm / "var") == ["log"]
        held = os.open(etc / "hosts", os.O_RDONLY)  # the kernel keeps this inode and its attributes
        assert os.fstat(held).st_size == len("127.0.0.1 old\n")

        (m.guest / "etc/hosts").write_text("127.0.0.1 changed inside the guest\n")
        change_keeping_size_and_mtime(m.guest / "etc/motd", "same size B\n")
        (m.guest / "etc/new").write_text("made in the guest\n")
        # cached: the mount does not ask before the TTLs run out (a REST listing has no mode or times, so a
        # stat there asks the guest for them, and sees the new size)
        m.reset_stats()
        if api != "rest":
            assert (etc / "hosts").stat().st_size == len("127.0.0.1 old\n")
        assert sorted(os.listdir(etc)) == ["hosts", "motd"] and not (etc / "new").exists()
        assert guest_calls(m) == 0

        done = refresh(m.mp, etc)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"refreshed {etc}: ") and "forgotten" in done.stdout
        assert os.fstat(held).st_size == len("127.0.0.1 changed inside the guest\n")
        os.close(held)

        assert (etc / "hosts").read_text() == "127.0.0.1 changed inside the guest\n"
        assert (etc / "motd").read_text() == "same size B\n"  # the kernel's page cache went too
        assert sorted(os.listdir(etc)) == ["hosts", "motd", "new"]
        assert (etc / "new").read_text() == "made in the guest\n"
        # the sibling directory was not part of the refresh: still answered from the cache
        m.reset_stats()
        assert os.listdir(m.vm / "var") == ["log"]
        assert guest_calls(m) == 0

        # a relative PATH is taken from the current directory
        (m.guest / "var/log").write_text("log grew\n")
        done = refresh(m.mp, "log", cwd=m.vm / "var")
        assert done.returncode == 0, done.stderr
        assert (m.vm / "var/log").read_text() == "log grew\n"


def test_refresh_of_the_whole_mount_and_sighup(tmp_path, state_home):
    with mounted_guestfs(tmp_path, attr_ttl=LONG, dir_ttl=LONG, setup=setup) as m:
        assert (m.vm / "var/log").read_text() == "log\n"
        assert sorted(os.listdir(m.vm)) == ["etc", "var"]

        (m.guest / "var/log").write_text("log, then more\n")
        (m.guest / "srv").mkdir()
        done = refresh(m.mp)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"refreshed {m.mp.resolve()}: ")
        assert (m.vm / "var/log").read_text() == "log, then more\n"
        assert sorted(os.listdir(m.vm)) == ["etc", "srv", "var"]

        assert os.listdir(m.vm / "srv") == []
        (m.guest / "srv/index.html").write_text("<h1>hi</h1>\n")
        assert os.listdir(m.vm / "srv") == []  # listed a moment ago: cached
        os.kill(m.proc.pid, signal.SIGHUP)
        assert wait_until(lambda: os.listdir(m.vm / "srv") == ["index.html"], 10, interval=0.2)
        assert "SIGHUP: forgetting cached listings and attributes" in m.log()
        assert m.proc.poll() is None  # SIGHUP refreshes, it does not stop the mount


def test_refresh_says_what_is_wrong(tmp_path, state_home):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = refresh(plain)
    assert result.returncode == 1
    assert result.stderr.strip() == f"guestfs-mount: no guestfs-mount running at {plain.resolve()}"
    with mounted_guestfs(tmp_path, setup=setup) as m:
        outside = refresh(m.mp, tmp_path)
        assert outside.returncode == 1
        assert outside.stderr.strip() == f"guestfs-mount: {tmp_path} is not inside the mount at {m.mp.resolve()}"
        assert refresh(m.mp, m.vm / "no/such/dir").returncode == 0  # nothing cached there: nothing to forget
