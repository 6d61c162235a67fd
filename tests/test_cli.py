"""The installed console scripts exist and answer --help."""

import os
import shutil
import subprocess
import sys

import pytest


def _script(name):
    # the console script installed next to the interpreter running the tests
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else shutil.which(name)


@pytest.mark.parametrize("name", ["guestfs-mount", "guestfs-sim"])
def test_console_script_help(name):
    exe = _script(name)
    assert exe, f"{name} is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout.lower()
    assert name in out.stdout
