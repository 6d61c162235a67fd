"""The simulator's shared state: settings, sessions (one store for both dialects), call counts, planned faults.

`Simulator.begin` is the one preamble every counted call goes through, so both dialects count, fail on
injected faults, and check power/Tools/guest login the same way. `guest_call` is the preamble of every guest
operation: with `serial_guest_ops` it first waits for the VM's previous guest operation to end (`end_call`, at the
end of each request), as VMware Tools handles one request at a time. `transfer_delay` is the latency of the
/guestFile endpoint (first byte of a GET, end of a PUT).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .faults import SimFault
from .guestfs import GuestFS
from .inventory import VM, Inventory
from .transfers import TransferRegistry


# VI/JSON releases: this server is an 8.0U3 vCenter, but its URLs accept any release from 8.0.1.0 on.
MIN_RELEASE = (8, 0, 1, 0)
SERVER_RELEASE = (8, 0, 3, 0)


def release_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in release.split("."))


def release_ok(release: str) -> bool:
    """A dotted 4-part release id, 8.0.1.0 or later."""
    return bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", release)) and release_tuple(release) >= MIN_RELEASE


@dataclass
class Settings:
    root: Path
    vc_user: str = "administrator@vsphere.local"
    vc_password: str = "vmware"
    guest_user: str = "root"
    guest_password: str = "vmware"
    latency_ms: int = 0
    transfer_latency_ms: int | None = None  # first byte of a GET, end of a PUT (None: latency_ms)
    serial_guest_ops: bool = False  # one guest operation at a time per VM; the others wait their turn
    transfer_host: str = "*"
    tls: bool = False
    host_cert_pem: str | None = None  # the server's own leaf certificate, shown as the ESXi host's
    host_thumbprint: str | None = None


@dataclass
class Session:
    token: str
    key: str
    user: str
    created: datetime
    last_active: datetime
    # PropertyCollector pages not fetched yet, by token
    pending: dict[str, list] = field(default_factory=dict)


def iso(ts: datetime | float) -> str:
    """ISO-8601 in whole seconds, UTC, as the guest agent reports times."""
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(int(ts), timezone.utc)
    return ts.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class Sessions:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_token: dict[str, Session] = {}

    def create(self, user: str) -> Session:
        now = datetime.now(timezone.utc)
        s = Session(token=uuid.uuid4().hex, key=str(uuid.uuid4()), user=user, created=now, last_active=now)
        with self._lock:
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        with self._lock:
            s = self._by_token.get(token or "")
        if s is not None:
            s.last_active = datetime.now(timezone.utc)
        return s

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)

    def expire_all(self) -> None:
        with self._lock:
            self._by_token.clear()


@dataclass
class PlannedFault:
    operation: str
    fault: str
    times: int
    vm: str | None


class FaultPlan:
    """Faults asked for through /_sim/faults; each matching call takes one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._planned: list[PlannedFault] = []

    def add(self, operation: str, fault: str, times: int, vm: str | None) -> None:
        with self._lock:
            self._planned.append(PlannedFault(operation, fault, times, vm))

    def take(self, operation: str, vm: str | None) -> str | None:
        with self._lock:
            for p in self._planned:
                if p.operation == operation and (p.vm is None or p.vm == vm) and p.times > 0:
                    p.times -= 1
                    if p.times == 0:
                        self._planned.remove(p)
                    return p.fault
        return None


class Simulator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.inventory = Inventory(settings.root)
        self.sessions = Sessions()
        self.faults = FaultPlan()
        self.transfers = TransferRegistry()
        self.port = 0
        self._stats_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self._turns: dict[str, threading.Lock] = {}  # VM name -> its guest's one operation at a time
        self._turns_lock = threading.Lock()
        self._held = threading.local()  # the turn this request thread holds, released by end_call

    # ---- counting and injected faults

    def count(self, operation: str) -> None:
        with self._stats_lock:
            self.calls[operation] += 1

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self.calls)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.calls.clear()

    def begin(self, operation: str, vm_name: str | None = None, *, latency: bool = True) -> None:
        """Count a call, wait the configured latency, and raise a planned fault if one matches."""
        self.count(operation)
        if latency and self.settings.latency_ms:
            time.sleep(self.settings.latency_ms / 1000)
        fault = self.faults.take(operation, vm_name)
        if fault:
            raise SimFault(fault, f"injected fault {fault} on {operation}")

    def transfer_delay(self) -> None:
        """The latency of a transfer: before the first byte of a GET, before the answer to a PUT."""
        ms = self.settings.transfer_latency_ms
        ms = self.settings.latency_ms if ms is None else ms
        if ms:
            time.sleep(ms / 1000)

    # ---- guest operations

    def _take_turn(self, vm: VM | None) -> None:
        """On a serial guest, wait until the VM's guest operation in progress ends (its request's end_call)."""
        if not self.settings.serial_guest_ops or vm is None:
            return
        with self._turns_lock:
            turn = self._turns.setdefault(vm.name, threading.Lock())
        turn.acquire()
        self._held.turn = turn

    def end_call(self) -> None:
        """A request ended: give up the guest turn it held, if any (called for every request, whatever happened)."""
        turn = getattr(self._held, "turn", None)
        if turn is not None:
            self._held.turn = None
            turn.release()

    def session(self, token: str | None) -> Session:
        s = self.sessions.get(token)
        if s is None:
            raise SimFault("NotAuthenticated", "The session is not authenticated.", privilegeId="System.View")
        return s

    def guest_call(self, operation: str, token: str | None, vm_id: str, user: str | None, password: str | None) -> tuple[VM, GuestFS]:
        """The checks of every guest operation, in a real vCenter's order; returns the VM and its file system."""
        vm = self.inventory.by_id(vm_id) if isinstance(vm_id, str) else None
        self._take_turn(vm)
        self.begin(operation, vm.name if vm else None)
        if vm is not None and vm.latency_ms:
            time.sleep(vm.latency_ms / 1000)
        self.session(token)
        if vm is None:
            raise SimFault(
                "ManagedObjectNotFound",
                f"The object 'vim.VirtualMachine:{vm_id}' has already been deleted or has not been completely created",
                obj={"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": str(vm_id)},
            )
        if vm.power_state != "poweredOn":
            raise SimFault(
                "InvalidPowerState",
                f"The attempted operation cannot be performed in the current state ({vm.power_state}).",
                requestedState="poweredOn",
                existingState=vm.power_state,
            )
        if not vm.tools_running:
            raise SimFault("GuestOperationsUnavailable", "The guest operations agent could not be contacted.")
        if user != self.settings.guest_user or password != self.settings.guest_password:
            raise SimFault("InvalidGuestLogin", "Failed to authenticate with the guest operating system using the supplied credentials.")
        return vm, GuestFS(vm.dir, windows=vm.windows)

    def set_power(self, vm: VM, state: str) -> None:
        vm.power_state = state
        if state != "poweredOn":
            self.transfers.abort_vm(vm.name)  # URLs die and in-flight transfers are cut on any power change

    def transfer_url(self, transfer_id: int, token: str) -> str:
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{self.settings.transfer_host}:{self.port}/guestFile?id={transfer_id}&token={token}"
