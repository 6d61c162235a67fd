"""Run a `guestfs-mount` command (status, refresh, ...) as a user runs it, against a running test mount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def guestfs_mount(*args, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`guestfs-mount ARGS...` with this checkout's package, output captured as text."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "guestfs_mount", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
