"""The things a benchmark run drives: the simulator and the mount as child processes, started by their real
command lines, always stopped (every wait has a timeout)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from guestfs_mount.fs.mountinfo import fuse_mountpoints  # the parser only: the mount measured may be another commit's

REPO = Path(__file__).resolve().parents[1]
VM = "vm1"
LISTEN_PREFIX = "guestfs-sim: listening on "


def _env(product: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(product), os.environ.get("PYTHONPATH")])))


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@dataclass
class Sim:
    """A running simulator: its URL, root (one directory per VM) and /_sim controls."""

    url: str
    root: Path
    process: subprocess.Popen
    latency_ms: int

    def _control(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            response = client.request(method, path, json=body)
        response.raise_for_status()
        return response

    def stats(self) -> dict[str, int]:
        return self._control("GET", "/_sim/stats").json()["calls"]

    def reset_stats(self) -> None:
        self._control("POST", "/_sim/stats/reset", {})


@contextlib.contextmanager
def simulator(root: Path, log_path: Path, latency_ms: int, product: Path = REPO, timeout: float = 30) -> Iterator[Sim]:
    """`python -m guestfs_mount.sim --root ROOT --listen 127.0.0.1:0 --latency-ms N`, its address read from the
    first stdout line. `product` is the directory holding the `guestfs_mount` package to run."""
    args = [sys.executable, "-m", "guestfs_mount.sim", "--root", str(root), "--listen", "127.0.0.1:0",
            "--latency-ms", str(latency_ms)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                   env=_env(product), cwd=product)
    try:
        lines: queue.Queue = queue.Queue()

        def read_stdout():
            for line in process.stdout:
                lines.put(line.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"guestfs-sim printed no address within {timeout}s (log: {log_path})") from None
        if first is None or not first.startswith(LISTEN_PREFIX):
            raise RuntimeError(f"guestfs-sim did not start: {first!r} (log: {log_path})")
        yield Sim(first[len(LISTEN_PREFIX):], root, process, latency_ms)
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def write_config(path: Path, url: str, api: str, spool: Path, recovered: Path) -> None:
    """A mount config with the product's defaults for everything a user would not set."""
    path.write_text(textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        password = "vmware"
        api = "{api}"
        [vms.default]
        username = "root"
        password = "vmware"
        [mount]
        spool_dir = "{spool}"
        recovery_dir = "{recovered}"
        """))
    os.chmod(path, 0o600)


def is_mounted(mountpoint: Path) -> bool:
    return os.path.realpath(mountpoint) in fuse_mountpoints()


def unmount(mountpoint: Path, timeout: float = 60) -> None:
    """fusermount3 -u (the mount uploads what is dirty first), then lazily as a last resort."""
    mp = os.path.realpath(mountpoint)
    for argv in (["fusermount3", "-u", mp], ["fusermount3", "-u", "-z", mp], ["umount", "-l", mp]):
        if not is_mounted(Path(mp)):
            return
        with contextlib.suppress(subprocess.TimeoutExpired, FileNotFoundError):
            subprocess.run(argv, timeout=timeout, capture_output=True)


@dataclass
class Mount:
    """A running mount: `mp/vm1` is the VM's `/`, `process.pid` the mount process itself (--foreground)."""

    mp: Path
    api: str
    process: subprocess.Popen
    log_path: Path

    @property
    def vm(self) -> Path:
        return self.mp / VM

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


@contextlib.contextmanager
def mount(sim: Sim, workdir: Path, api: str, product: Path = REPO, timeout: float = 60) -> Iterator[Mount]:
    """`python -m guestfs_mount MP --config FILE --foreground`, up when MP shows in mountinfo; always unmounted."""
    name = f"{api}-{sim.latency_ms}ms"
    mp, spool, recovered = workdir / f"mnt-{name}", workdir / f"spool-{name}", workdir / f"recovered-{name}"
    log_path, config = workdir / f"mount-{name}.log", workdir / f"config-{name}.toml"
    mp.mkdir(parents=True, exist_ok=True)
    write_config(config, sim.url, api, spool, recovered)
    argv = [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(config), "--foreground"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_env(product), cwd=product)  # cwd: `python -m` looks there first
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mp) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_mounted(mp):
            raise RuntimeError(f"the mount did not come up within {timeout}s (exit code {process.poll()}); "
                               f"log: {log_path.read_text(errors='replace')[-2000:]}")
        yield Mount(mp, api, process, log_path)
    finally:
        unmount(mp)
        stop_process(process)
