"""Run a FUSE filesystem as a child process and always unmount it, also when the test fails.

Every later mount test goes through `mounted()`: the filesystem under test runs in its own process (pyfuse3
allows one mount per process, and a crash there must not take pytest down), the test drives it with real
programs, and teardown unmounts with `fusermount3 -u`, then a lazy unmount as a last resort, then stops the
process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from guestfs_mount.fs.mountinfo import fuse_mountpoints


def is_mounted(mountpoint: str | os.PathLike) -> bool:
    return os.path.realpath(mountpoint) in fuse_mountpoints()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def unmount(mountpoint: str | os.PathLike, timeout: float = 15) -> None:
    """Unmount politely, then lazily; never raises for a mount point that is already gone."""
    mp = os.path.realpath(mountpoint)
    if not is_mounted(mp):
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["fusermount3", "-u", mp], timeout=timeout, capture_output=True)
    if is_mounted(mp):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["fusermount3", "-u", "-z", mp], timeout=timeout, capture_output=True)
    if is_mounted(mp):
        subprocess.run(["umount", "-l", mp], timeout=timeout, capture_output=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def mounted(
    argv: Sequence[str],
    mountpoint: str | os.PathLike,
    *,
    log_path: str | os.PathLike,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Iterator[subprocess.Popen]:
    """Start `argv` (a filesystem that mounts on `mountpoint` and stays in the foreground) and yield its process
    once the mount is up. Its output goes to `log_path`, which the error message points at."""
    mp = os.path.realpath(mountpoint)
    Path(mp).mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd)
    try:
        up = wait_until(lambda: is_mounted(mp) or proc.poll() is not None, timeout)
        if not up or not is_mounted(mp):
            raise RuntimeError(
                f"{argv[0]} did not mount {mp} within {timeout}s (exit code {proc.poll()}); "
                f"log: {Path(log_path).read_text(errors='replace')[-4000:]}"
            )
        yield proc
    finally:
        unmount(mp)
        stop_process(proc)
