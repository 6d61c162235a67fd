"""The things a benchmark run drives: the simulator and the mount as child processes, started by their real
command lines through the tests' own helpers (tests/helpers/simulator.py, tests/helpers/mountfs.py), always
stopped (every wait has a timeout).

The simulator is always this work tree's (it is the test bed, and older commits' simulators lack the latency and
serial-guest options); the mount is the product measured (`--commit`, `--product`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.mountfs import VM, GuestMount, mount_guestfs
from tests.helpers.simulator import Simulator, running_simulator

REPO = Path(__file__).resolve().parents[1]
GUESTS = ("parallel", "serial")  # the simulated guest: any number of guest operations at once, or one at a time

__all__ = ["REPO", "VM", "GUESTS", "Simulator", "GuestMount", "simulator", "mount"]


@contextlib.contextmanager
def simulator(root: Path, log_path: Path, latency_ms: int, guest: str = "parallel", tls: bool = False,
              timeout: float = 30) -> Iterator[Simulator]:
    """`python -m guestfs_mount.sim --root ROOT --latency-ms N [--serial-guest-ops] [--tls]` (transfers get the
    same latency: first byte of a GET, answer to a PUT)."""
    extra = ("--serial-guest-ops",) if guest == "serial" else ()
    with running_simulator(root, log_path=log_path, latency_ms=latency_ms, extra_args=extra, tls=tls,
                           timeout=timeout) as sim:
        yield sim


@contextlib.contextmanager
def mount(sim: Simulator, workdir: Path, name: str, api: str, product: Path = REPO, timeout: float = 60,
          guest_calls: int | None = None, write_back: bool = False) -> Iterator[GuestMount]:
    """The product's mount of `sim` with its default settings (no [cache] table; `guest_calls`: [vcenter]
    max_guest_calls_per_vm; `write_back`: [mount] write_back = true), in workdir/mount-NAME; always unmounted. A
    TLS simulator's CA is the config's ca_file: the mount verifies it as it would a real vCenter's."""
    vcenter = f"max_guest_calls_per_vm = {guest_calls}\n" if guest_calls else ""
    if sim.ca_path:
        vcenter += f'ca_file = "{sim.ca_path}"\n'
    with mount_guestfs(sim, workdir / f"mount-{name}", api, attr_ttl=None, dir_ttl=None, vm_list_ttl=None,
                       product=product, timeout=timeout, vcenter_config=vcenter,
                       mount_config="write_back = true\n" if write_back else "") as m:
        yield m
