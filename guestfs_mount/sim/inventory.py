"""The VMs: one per subdirectory of the root, found anew at each listing; ids, power state, Tools state, host."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from .hosts import Hosts

log = logging.getLogger("guestfs_mount.sim")

POWER_STATES = ("poweredOn", "poweredOff", "suspended")


@dataclass
class VM:
    name: str
    id: str
    dir: Path
    power_state: str = "poweredOn"
    tools_running: bool = True
    guest_family: str = "linuxGuest"
    template: bool = False
    latency_ms: int = 0  # extra delay of this VM's guest operations (a slow guest), set through /_sim
    throttle_bps: int = 0  # cap on this VM's /guestFile GET and PUT bodies in bytes/s (0: none), set through /_sim
    host: str = ""  # the HostSystem it runs on (runtime.host); /_sim/vms/{name}/migrate moves it

    @property
    def windows(self) -> bool:
        return self.guest_family == "windowsGuest"

    @property
    def guest_ops_ready(self) -> bool:
        return self.power_state == "poweredOn" and self.tools_running


class Inventory:
    """Maps VM names to VM records. Ids (`vm-<n>`, or `<n>` on ESXi) stay the same per name for the life of the process."""

    def __init__(self, root: Path, hosts: Hosts, id_prefix: str = "vm-"):
        self.root = root
        self.hosts = hosts
        self.id_prefix = id_prefix  # "" on ESXi, whose VM ids are plain numbers
        self._lock = threading.Lock()
        self._vms: dict[str, VM] = {}
        self._next_id = 1
        self._initial = self._read_initial_state()

    def _read_initial_state(self) -> dict:
        path = self.root / ".vms.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("ignoring %s: %s", path, err)
            return {}

    def _record(self, name: str) -> VM:
        vm = self._vms.get(name)
        if vm is None:
            init = self._initial.get(name, {})
            vm = VM(
                name=name,
                id=f"{self.id_prefix}{self._next_id}",
                dir=self.root / name,
                power_state=init.get("powerState", "poweredOn"),
                tools_running=init.get("toolsRunning", True),
                guest_family=init.get("guestFamily", "linuxGuest"),
                template=init.get("template", False),
            )
            # `.vms.json` may name the host (by name or id); else round robin in the order VMs are first seen
            placed = self.hosts.find(init.get("host"))
            vm.host = placed.id if placed else self.hosts.placement(self._next_id - 1)
            self._next_id += 1
            self._vms[name] = vm
        return vm

    def list(self) -> list[VM]:
        """Every VM whose directory exists now, sorted by name (a directory made after start shows up here)."""
        try:
            names = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir())
        except OSError:
            names = []
        with self._lock:
            return [self._record(n) for n in names]

    def by_name(self, name: str) -> VM | None:
        if name.startswith(".") or not (self.root / name).is_dir():
            return None
        with self._lock:
            return self._record(name)

    def by_id(self, vm_id: str) -> VM | None:
        with self._lock:
            known = next((vm for vm in self._vms.values() if vm.id == vm_id), None)
        if known is None:
            # An id can name a directory not listed yet; a listing assigns ids, so list once and look again.
            self.list()
            with self._lock:
                known = next((vm for vm in self._vms.values() if vm.id == vm_id), None)
        if known is None or not known.dir.is_dir():
            return None
        return known
