"""Start and stop of the mount: SIGTERM uploads dirty files before unmounting; a mount leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal

from tests.helpers.mounting import is_mounted
from tests.helpers.mountfs import mounted_guestfs


def test_sigterm_uploads_dirty_files_then_unmounts(tmp_path):
    with mounted_guestfs(tmp_path) as m:
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"written before SIGTERM")
            assert not (m.guest / "f").exists()
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(timeout=30)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        assert (m.guest / "f").read_bytes() == b"written before SIGTERM"
        assert not is_mounted(m.mp)
        assert m.proc.returncode == 0, m.log()[-2000:]
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_slow_guest_does_not_block_other_vms(tmp_path):
    import subprocess
    import time

    def setup(vm1):
        (vm1.parent / "slowvm").mkdir()
        (vm1 / "f").write_text("fast")

    with mounted_guestfs(tmp_path, setup=setup) as m:
        m.sim.latency("slowvm", 4000)
        slow = subprocess.Popen(["ls", str(m.mp / "slowvm")], stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            assert os.listdir(m.vm) == ["f"] and (m.vm / "f").read_text() == "fast"
            assert time.monotonic() - t0 < 2
            assert slow.poll() is None  # still waiting for its guest
        finally:
            slow.wait(timeout=30)
        assert slow.returncode == 0


def test_read_only_mount(tmp_path):
    import errno

    import pytest

    def setup(vm1):
        (vm1 / "f").write_text("content")

    with mounted_guestfs(tmp_path, setup=setup, extra_args=("--read-only",)) as m:
        assert (m.vm / "f").read_text() == "content"
        for fn, args in [(open, (m.vm / "f", "w")), (os.mkdir, (m.vm / "d",)), (os.unlink, (m.vm / "f",)),
                         (os.chmod, (m.vm / "f", 0o600))]:
            with pytest.raises(OSError) as e:
                fn(*args)
            assert e.value.errno == errno.EROFS, fn
        assert (m.guest / "f").read_text() == "content"
