"""Mount guestfs-mount for a test, driven by real programs.

`mounted_guestfs(tmp, api)` starts the simulator (tests/helpers/simulator.py) with one Linux VM `vm1` (or the
Linux VMs named in `vms=`), writes a 0600 config file (`mount_config=` adds keys to its [mount] table,
`login_config=` to its [vms.default] table, e.g. `exec = true`) and runs `python -m guestfs_mount MP --config FILE --foreground` through `mounting.mounted`,
which always unmounts: the real command line, the real client and the real simulator over real sockets.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tests.helpers.mounting import mounted
from tests.helpers.simulator import Simulator, running_simulator

VM = "vm1"


@dataclass
class GuestMount:
    mp: Path  # the mount point
    root: Path  # the simulator's root: one directory per VM
    api: str
    log_path: Path
    sim: Simulator
    proc: object  # the mount's process
    vm_names: tuple[str, ...] = (VM,)

    def vm_dir(self, name: str) -> Path:
        """A VM's directory in the mount."""
        return self.mp / name

    def guest_dir(self, name: str) -> Path:
        """A VM's files as the guest has them (the simulator's directory)."""
        return self.root / name

    @property
    def spool(self) -> Path:
        return self.log_path.parent / "spool"

    @property
    def recovered(self) -> Path:
        return self.log_path.parent / "recovered"

    @property
    def vm(self) -> Path:
        """vm1's directory in the mount."""
        return self.mp / VM

    @property
    def guest(self) -> Path:
        """vm1's files as the guest has them (the simulator's directory)."""
        return self.root / VM

    def stats(self) -> dict:
        """Guest calls (by VI method name) since the last reset_stats()."""
        return self.sim.stats()

    def reset_stats(self) -> None:
        self.sim.reset_stats()

    def fault(self, operation: str, fault: str, times: int = 1) -> None:
        """The next `times` calls of `operation` (a VI method name, or guestFile.GET/PUT) fail with `fault`."""
        self.sim.fault(operation, fault, times, VM)

    def power(self, state: str) -> None:
        self.sim.power(VM, state)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_config(path: Path, url: str, api: str, spool: Path, recovered: Path, attr_ttl: float, dir_ttl: float,
                 extra: str = "", login_extra: str = "") -> None:
    path.write_text(textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        password = "vmware"
        api = "{api}"
        [vms.default]
        username = "root"
        password = "vmware"
        {login_extra}
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
                    setup: Callable[[Path], None] | None = None,
                    extra_args: tuple[str, ...] = (), vms: tuple[str, ...] = (VM,),
                    mount_config: str = "", login_config: str = "") -> Iterator[GuestMount]:
    root, mp = tmp / "vms", tmp / "mnt"
    for name in vms:
        (root / name).mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(root / VM)
    spool, recovered, log_path = tmp / "spool", tmp / "recovered", tmp / "mount.log"
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(running_simulator(root, log_path=tmp / "sim.log"))
        cfg = tmp / "config.toml"
        write_config(cfg, sim.url, api, spool, recovered, attr_ttl, dir_ttl, extra=mount_config,
                     login_extra=login_config)
        argv = [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(cfg), "--foreground", *extra_args]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = stack.enter_context(mounted(argv, mp, log_path=log_path, env=env))
        yield GuestMount(mp, root, api, log_path, sim, proc, tuple(vms))

