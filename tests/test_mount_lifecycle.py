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
