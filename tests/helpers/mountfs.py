"""Mount guestfs-mount for a test, driven by real programs.

`mounted_guestfs(tmp, api)` starts the simulator (tests/helpers/simulator.py) with one Linux VM `vm1` (or the
Linux VMs named in `vms=`, `sim_args=` for its command line) and mounts it with `mount_guestfs`: a 0600 config
file (`mount_config=` adds keys to its [mount] table, `cache_config=` to [cache], `login_config=` to [vms.default],
e.g. `exec = true`) and `python -m guestfs_mount MP --config FILE --foreground` through `mounting.mounted`, which
always unmounts: the real command line, the real client and the real simulator over real sockets. The benchmarks
(benchmarks/rig.py) start theirs the same way.
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

    def spool_files(self) -> list[str]:
        """What the spool directory holds besides the content cache's directory (whole copies of guest files)."""
        return sorted(p.name for p in self.spool.iterdir() if not p.name.startswith("cache-"))

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


REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, url: str, api: str, spool: Path, recovered: Path, attr_ttl: float | None = 5.0,
                 dir_ttl: float | None = 5.0, extra: str = "", *, vm_list_ttl: float | None = 2.0,
                 cache_extra: str = "", vcenter_extra: str = "", login_extra: str = "") -> None:
    """A 0600 config for the simulator's logins: the tests' TTLs in [cache] (None: that key left to the product's
    default), `extra` lines in [mount], `cache_extra` lines in [cache], `vcenter_extra` lines in [vcenter],
    `login_extra` lines in [vms.default]."""
    ttls = {"attr_ttl": attr_ttl, "dir_ttl": dir_ttl, "vm_list_ttl": vm_list_ttl}
    cache_lines = "".join(f"{k} = {v}\n" for k, v in ttls.items() if v is not None) + cache_extra
    path.write_text(textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        password = "vmware"
        api = "{api}"
        """) + vcenter_extra + textwrap.dedent("""\
        [vms.default]
        username = "root"
        password = "vmware"
        """) + (login_extra.rstrip("\n") + "\n" if login_extra else "")
        + (f"[cache]\n{cache_lines}" if cache_lines else "") + textwrap.dedent(f"""\
        [mount]
        spool_dir = "{spool}"
        recovery_dir = "{recovered}"
        """) + extra)
    os.chmod(path, 0o600)


@contextlib.contextmanager
def mount_guestfs(sim: Simulator, workdir: Path, api: str = "vi-json", *, attr_ttl: float | None = 5.0,
                  dir_ttl: float | None = 5.0, vm_list_ttl: float | None = 2.0, mount_config: str = "",
                  cache_config: str = "", vcenter_config: str = "", login_config: str = "",
                  extra_args: tuple[str, ...] = (),
                  vms: tuple[str, ...] = (VM,), product: Path = REPO, timeout: float = 30) -> Iterator[GuestMount]:
    """Mount the running simulator `sim` at workdir/mnt (config, spool, recovery dir and log beside it) until the
    block ends. TTLs of None leave the product's defaults (the benchmarks'); `product` is the directory holding the
    `guestfs_mount` package to run (the benchmarks measure older commits so)."""
    mp, spool, recovered, log_path = workdir / "mnt", workdir / "spool", workdir / "recovered", workdir / "mount.log"
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    write_config(cfg, sim.url, api, spool, recovered, attr_ttl, dir_ttl, extra=mount_config, vm_list_ttl=vm_list_ttl,
                 cache_extra=cache_config, vcenter_extra=vcenter_config, login_extra=login_config)
    argv = [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(cfg), "--foreground", *extra_args]
    env = dict(os.environ, PYTHONPATH=str(product))
    # cwd: `python -m` looks there first, before PYTHONPATH and the installed package
    with mounted(argv, mp, log_path=log_path, env=env, cwd=product, timeout=timeout) as proc:
        yield GuestMount(mp, sim.root, api, log_path, sim, proc, tuple(vms))


@contextlib.contextmanager
def mounted_guestfs(tmp: Path, api: str = "vi-json", attr_ttl: float = 5.0, dir_ttl: float = 5.0,
                    setup: Callable[[Path], None] | None = None,
                    extra_args: tuple[str, ...] = (), vms: tuple[str, ...] = (VM,),
                    mount_config: str = "", cache_config: str = "", login_config: str = "",
                    sim_args: tuple[str, ...] = (), latency_ms: int = 0) -> Iterator[GuestMount]:
    root = tmp / "vms"
    for name in vms:
        (root / name).mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(root / VM)
    with running_simulator(root, log_path=tmp / "sim.log", latency_ms=latency_ms, extra_args=sim_args) as sim:
        with mount_guestfs(sim, tmp, api, attr_ttl=attr_ttl, dir_ttl=dir_ttl, mount_config=mount_config,
                           cache_config=cache_config, login_config=login_config, extra_args=extra_args,
                           vms=vms) as m:
            yield m

