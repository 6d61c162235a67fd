"""Mount guestfs-mount for a test, driven by real programs.

`mounted_guestfs(tmp, api)` starts the simulator (tests/helpers/simulator.py) with one Linux VM `vm1`, writes a
0600 config file and runs `python -m guestfs_mount MP --config FILE --foreground` through `mounting.mounted`,
which always unmounts. When the simulator is not importable, it falls back to a local-directory guest
(`localguest.LocalGuest`) run in a child process by this module's `__main__` (no call counting then).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.helpers.mounting import mounted

VM = "vm1"


@dataclass
class GuestMount:
    mp: Path  # the mount point
    root: Path  # the simulator's root: one directory per VM
    api: str
    log_path: Path
    sim: Any = None  # the Simulator, when there is one
    proc: Any = None  # the mount's process
    stats_path: Path | None = None  # the local guest's call counts
    _baseline: dict | None = None

    @property
    def vm(self) -> Path:
        """vm1's directory in the mount."""
        return self.mp / VM

    @property
    def guest(self) -> Path:
        """vm1's files as the guest has them (the simulator's directory)."""
        return self.root / VM

    def stats(self) -> dict:
        """Guest calls since the last reset_stats()."""
        if self.sim is not None:
            stats = self.sim.stats()
            return stats.get("calls", stats) if isinstance(stats, dict) else stats
        now = json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}
        base = self._baseline or {}
        return {k: v - base.get(k, 0) for k, v in now.items() if v - base.get(k, 0)}

    def reset_stats(self) -> None:
        if self.sim is not None:
            self.sim.reset_stats()
        else:
            self._baseline = None
            self._baseline = self.stats()

    def fault(self, operation: str, fault: str, times: int = 1) -> None:
        """The next `times` calls of `operation` (a VI method name, or guestFile.GET/PUT) fail with `fault`."""
        if self.sim is not None:
            self.sim.fault(operation, fault, times, VM)
        else:
            self._control("faults", {**self._control_get().get("faults", {}), operation: [fault, times]})

    def power(self, state: str) -> None:
        if self.sim is not None:
            self.sim.power(VM, state)
        else:
            self._control("off", [] if state == "poweredOn" else [VM])

    def _control_get(self) -> dict:
        path = self.log_path.parent / "control.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _control(self, key: str, value) -> None:
        path = self.log_path.parent / "control.json"
        control = self._control_get()
        control[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(control))
        os.replace(tmp, path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def have_simulator() -> bool:
    try:
        import tests.helpers.simulator  # noqa: F401
        import guestfs_mount.vsphere.connect  # noqa: F401
    except ImportError:
        return False
    return True


def write_config(path: Path, url: str, api: str, spool: Path, recovered: Path, attr_ttl: float, dir_ttl: float,
                 extra: str = "") -> None:
    path.write_text(textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        password = "vmware"
        api = "{api}"
        [vms.default]
        username = "root"
        password = "vmware"
        [cache]
        attr_ttl = {attr_ttl}
        dir_ttl = {dir_ttl}
        vm_list_ttl = 2.0
        [mount]
        spool_dir = "{spool}"
        recovery_dir = "{recovered}"
        """) + extra)
    os.chmod(path, 0o600)


@contextlib.contextmanager
def mounted_guestfs(tmp: Path, api: str = "vi-json", attr_ttl: float = 5.0, dir_ttl: float = 5.0,
                    setup: Callable[[Path], None] | None = None, force_local: bool = False,
                    extra_args: tuple[str, ...] = ()) -> Iterator[GuestMount]:
    root, mp = tmp / "vms", tmp / "mnt"
    (root / VM).mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(root / VM)
    spool, recovered, log_path = tmp / "spool", tmp / "recovered", tmp / "mount.log"
    with contextlib.ExitStack() as stack:
        if have_simulator() and not force_local:
            from tests.helpers.simulator import running_simulator

            sim = stack.enter_context(running_simulator(root, log_path=tmp / "sim.log"))
            cfg = tmp / "config.toml"
            write_config(cfg, sim.url, api, spool, recovered, attr_ttl, dir_ttl)
            argv = [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(cfg), "--foreground", *extra_args]
        else:
            sim = None
            argv = [sys.executable, "-m", "tests.helpers.mountfs", str(root), str(mp), "--api", api,
                    "--spool", str(spool), "--recovered", str(recovered), "--attr-ttl", str(attr_ttl),
                    "--dir-ttl", str(dir_ttl), "--stats", str(tmp / "stats.json"),
                    "--control", str(tmp / "control.json"), *extra_args]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = stack.enter_context(mounted(argv, mp, log_path=log_path, env=env))
        yield GuestMount(mp, root, api, log_path, sim, proc, None if sim else tmp / "stats.json")


def _main() -> None:
    """Mount a LocalGuest: python -m tests.helpers.mountfs ROOT MP [--api rest] ..."""
    import trio  # noqa: F401

    from guestfs_mount.fs.mount import run_mount
    from guestfs_mount.fs.settings import MountSettings
    from guestfs_mount.vsphere.model import GuestCredentials
    from tests.helpers.localguest import LocalGuest

    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("mountpoint")
    p.add_argument("--api", default="vi-json")
    p.add_argument("--spool", required=True)
    p.add_argument("--recovered", required=True)
    p.add_argument("--attr-ttl", type=float, default=5.0)
    p.add_argument("--dir-ttl", type=float, default=5.0)
    p.add_argument("--debug", action="store_true")
    p.add_argument("--stats")
    p.add_argument("--control")
    p.add_argument("--read-only", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = MountSettings(spool_dir=Path(a.spool), recovery_dir=Path(a.recovered), attr_ttl=a.attr_ttl,
                             dir_ttl=a.dir_ttl, vm_list_ttl=2.0, read_only=a.read_only)
    guest = LocalGuest(a.root, dialect=a.api, stats_path=a.stats, control_path=a.control)
    run_mount(a.mountpoint, lambda: guest, lambda vm: GuestCredentials("root", "vmware"), settings)


if __name__ == "__main__":
    _main()
