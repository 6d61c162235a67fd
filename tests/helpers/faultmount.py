"""A mount for fault tests: a simulator that can be stopped and started again on the same port and root, an
optional `TcpProxy` in front of it (on the API and the transfer path), and a config with short timeouts.

`fault_mount(tmp, ...)` yields a `FaultMount`; like `mountfs.mounted_guestfs` it runs the real command line
(`python -m guestfs_mount MP --config FILE --foreground`) through `mounting.mounted`, which always unmounts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.helpers.mounting import mounted
from tests.helpers.simulator import Simulator, running_simulator
from tests.helpers.tcpproxy import TcpProxy

VM = "vm1"
REPO = Path(__file__).resolve().parents[2]

# short enough for tests, long enough for a loaded 2-core machine
TEST_VCENTER = {"timeout": 2.0, "connect_timeout": 1.0, "retries": 3}


class RestartableSimulator:
    """The simulator as a process that can be stopped and started again on the same port over the same root
    (a vCenter restart: sessions, transfer URLs and planned faults are gone, the files stay)."""

    def __init__(self, root: Path, log_path: Path):
        self.root, self.log_path = root, log_path
        self.port = 0
        self._stack: contextlib.ExitStack | None = None
        self.sim: Simulator | None = None
        self.starts = 0

    def start(self) -> Simulator:
        assert self._stack is None, "already running"
        stack = contextlib.ExitStack()
        self.sim = stack.enter_context(running_simulator(
            self.root, log_path=self.log_path, extra_args=("--listen", f"127.0.0.1:{self.port}")))
        self._stack = stack
        self.port = int(self.sim.url.rsplit(":", 1)[1])
        self.starts += 1
        return self.sim

    def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @property
    def running(self) -> bool:
        return self._stack is not None


@dataclass
class FaultMount:
    mp: Path
    root: Path
    api: str
    log_path: Path
    recovered: Path
    spool: Path
    server: RestartableSimulator
    proxy: TcpProxy | None
    proc: object
    config: dict = field(default_factory=dict)

    @property
    def sim(self) -> Simulator:
        assert self.server.sim is not None
        return self.server.sim

    @property
    def vm(self) -> Path:
        return self.mp / VM

    @property
    def guest(self) -> Path:
        return self.root / VM

    def stats(self) -> dict:
        return self.sim.stats()

    def reset_stats(self) -> None:
        self.sim.reset_stats()

    def fault(self, operation: str, fault: str, times: int = 1, vm: str | None = VM) -> None:
        self.sim.fault(operation, fault, times, vm)

    def power(self, state: str) -> None:
        self.sim.power(VM, state)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def recovered_files(self) -> list[Path]:
        return sorted(p for p in self.recovered.rglob("*") if p.is_file()) if self.recovered.exists() else []

    def alive(self) -> bool:
        return self.proc.poll() is None


def write_config(path: Path, url: str, api: str, spool: Path, recovered: Path, *, vcenter: dict,
                 guest_password: str = "vmware", attr_ttl: float = 1.0, dir_ttl: float = 1.0,
                 vm_list_ttl: float = 2.0, cache: dict | None = None) -> None:
    extra = "".join(f"{k} = {v}\n" for k, v in vcenter.items())
    cache_extra = "".join(f"{k} = {v}\n" for k, v in (cache or {}).items())
    path.write_text(textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        password = "vmware"
        api = "{api}"
        """) + extra + textwrap.dedent(f"""\
        [vms.default]
        username = "root"
        password = "{guest_password}"
        [cache]
        attr_ttl = {attr_ttl}
        dir_ttl = {dir_ttl}
        vm_list_ttl = {vm_list_ttl}
        """) + cache_extra + textwrap.dedent(f"""\
        [mount]
        spool_dir = "{spool}"
        recovery_dir = "{recovered}"
        """))
    os.chmod(path, 0o600)


@contextlib.contextmanager
def fault_mount(tmp: Path, api: str = "vi-json", *, proxy: bool = False, vcenter: dict | None = None,
                guest_password: str = "vmware", attr_ttl: float = 1.0, dir_ttl: float = 1.0,
                vm_list_ttl: float = 2.0, debug: bool = False, cache: dict | None = None) -> Iterator[FaultMount]:
    root, mp = tmp / "vms", tmp / "mnt"
    (root / VM).mkdir(parents=True, exist_ok=True)
    spool, recovered, log_path = tmp / "spool", tmp / "recovered", tmp / "mount.log"
    settings = {**TEST_VCENTER, **(vcenter or {})}
    server = RestartableSimulator(root, tmp / "sim.log")
    with contextlib.ExitStack() as stack:
        sim = server.start()
        stack.callback(server.stop)
        url = sim.url
        tcp = None
        if proxy:
            tcp = stack.enter_context(TcpProxy(("127.0.0.2", server.port), ("127.0.0.1", server.port)))
            url = f"http://127.0.0.2:{server.port}"
        cfg = tmp / "config.toml"
        write_config(cfg, url, api, spool, recovered, vcenter=settings, guest_password=guest_password,
                     attr_ttl=attr_ttl, dir_ttl=dir_ttl, vm_list_ttl=vm_list_ttl, cache=cache)
        argv = [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(cfg), "--foreground"] + (["--debug"] if debug else [])
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = stack.enter_context(mounted(argv, mp, log_path=log_path, env=env))
        yield FaultMount(mp, root, api, log_path, recovered, spool, server, tcp, proc, settings)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    """(fn's result or the OSError it raised, seconds it took)."""
    t0 = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except OSError as e:
        result = e
    return result, time.monotonic() - t0


def retry_until(fn, timeout: float, interval: float = 0.2):
    """fn() until it stops raising OSError (the last error is raised after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
