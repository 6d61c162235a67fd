"""FUSE works here: a tiny pyfuse3 filesystem mounts, real programs read it, and it always unmounts."""

import subprocess

import pytest

from tests.helpers.hellofs import HELLO_DATA
from tests.helpers.mounting import is_mounted, mounted


def test_hellofs_mounts_reads_and_unmounts(tmp_path, python_exe):
    mp = tmp_path / "mnt"
    with mounted([python_exe, "-m", "tests.helpers.hellofs", str(mp)], mp, log_path=tmp_path / "fs.log") as proc:
        assert is_mounted(mp)
        out = subprocess.run(["cat", str(mp / "hello")], capture_output=True, timeout=10, check=True)
        assert out.stdout == HELLO_DATA
        listing = subprocess.run(["ls", "-la", str(mp)], capture_output=True, text=True, timeout=10, check=True)
        assert "hello" in listing.stdout
        missing = subprocess.run(["cat", str(mp / "nope")], capture_output=True, text=True, timeout=10)
        assert missing.returncode != 0 and "No such file" in missing.stderr
    assert not is_mounted(mp)
    assert proc.poll() is not None


def test_mount_is_removed_even_when_the_test_body_fails(tmp_path, python_exe):
    mp = tmp_path / "mnt"
    with pytest.raises(ZeroDivisionError):
        with mounted([python_exe, "-m", "tests.helpers.hellofs", str(mp)], mp, log_path=tmp_path / "fs.log"):
            1 / 0
    assert not is_mounted(mp)
