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
