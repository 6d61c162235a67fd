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
from .hosts import Host, Hosts
from .guestprocs import GuestPrograms
from .inventory import VM, Inventory
from .product import ESXI, VCENTER
from .transfers import TransferRegistry


# VI/JSON releases: this server is an 8.0U3 vCenter, but its URLs accept any release from 8.0.1.0 on.
MIN_RELEASE = (8, 0, 1, 0)
SERVER_RELEASE = (8, 0, 3, 0)


def release_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in release.split("."))


def release_ok(release: str) -> bool:
    """A dotted 4-part release id, 8.0.1.0 or later."""
    return bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", release)) and release_tuple(release) >= MIN_RELEASE


def version_tuple(version: str) -> tuple[int, ...]:
    """"8.0.3" or "7.0.2.00100" -> (8, 0, 3) / (7, 0, 2, 100), for comparisons."""
    return tuple(int(x) for x in version.split("."))


# The vCenter version from which each API exists (what an older --vc-version leaves out).
VI_JSON_SINCE = (8, 0, 1)  # /sdk/vim25/{release}/...
REST_GUEST_SINCE = (7, 0, 2)  # /api/vcenter/vm/{vm}/guest/filesystem..., guest/operations
HELLO_SINCE = (8, 0, 2)  # POST /api/vcenter/system?action=hello

# The privilege each guest operation needs on the VM (pyVmomi's _typeinfo_vim.py); REST transfers differ (below).
PRIVILEGE_PREFIX = "VirtualMachine.GuestOperations."
GUEST_PRIVILEGES = {
    "ListFilesInGuest": "Query",
    "InitiateFileTransferFromGuest": "Query",
    "InitiateFileTransferToGuest": "Modify",
    "MakeDirectoryInGuest": "Modify",
    "DeleteFileInGuest": "Modify",
    "DeleteDirectoryInGuest": "Modify",
    "MoveFileInGuest": "Modify",
    "MoveDirectoryInGuest": "Modify",
    "ChangeFileAttributesInGuest": "Modify",
    "CreateTemporaryFileInGuest": "Modify",
    "CreateTemporaryDirectoryInGuest": "Modify",
    "StartProgramInGuest": "Execute",
    "ListProcessesInGuest": "Query",
    "TerminateProcessInGuest": "Execute",
    "ReadEnvironmentVariableInGuest": "Query",
}
PRIVILEGES = ("Query", "Modify", "Execute")


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
    host_cert_pem: str | None = None  # the first host's certificate (kept for older callers: use sim.hosts)
    host_thumbprint: str | None = None
    esxi: bool = False  # a standalone ESXi host (SOAP only, `ha-*` ids) instead of a vCenter
    hosts: list[tuple[str, str]] | None = None  # --hosts: (name, management address) per ESXi host
    host_cert_expired: bool = False  # --host-cert-expired: the hosts' own certificates expired a year ago
    transfer_port: bool = True  # --no-transfer-port: `*` transfer URLs carry no port, as ESXi's do
    transfer_gzip: str | None = None  # --transfer-gzip: None | "accepted" | "always"
    vc_version: str = "8.0.3"  # --vc-version: what vCenter reports; older versions lack VI/JSON, REST guest ops
    rest_vm_limit: int = 4000  # --rest-vm-limit: GET /api/vcenter/vm refuses more matches than this
    skip_unreadable: bool = False  # --skip-unreadable: listings skip chmod-000 files but still count them
    rest_permissions: str = "644"  # --rest-permissions: how REST prints permissions ("644", "0644", "100644")
    certs_zip: bytes | None = None  # --tls: GET /certs/download.zip, vCenter's root CAs (certs.py)


@dataclass
class Session:
    token: str
    key: str
    user: str
    created: datetime
    last_active: datetime
    # PropertyCollector pages not fetched yet, by token
    pending: dict[str, list] = field(default_factory=dict)
    rotate: bool = False  # /_sim/sessions/rotate: the next VI/JSON answer carries a new session id


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

    def rotate_all(self) -> None:
        """Every session gets a new id with its next VI/JSON answer; the old id dies then."""
        with self._lock:
            for s in self._by_token.values():
                s.rotate = True

    def take_rotation(self, token: str | None) -> str | None:
        """The session's new id if it was due one (the old id no longer works), else None."""
        with self._lock:
            s = self._by_token.get(token or "")
            if s is None or not s.rotate:
                return None
            del self._by_token[s.token]
            s.token, s.rotate = uuid.uuid4().hex, False
            self._by_token[s.token] = s
            return s.token


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
        self.product = ESXI if settings.esxi else VCENTER
        self.hosts = Hosts(settings.hosts or [(_default_host_name(settings), "127.0.0.1")],
                           first_id=self.product.host)
        self.inventory = Inventory(settings.root, self.hosts, self.product.vm_id_prefix)
        self.sessions = Sessions()
        self.faults = FaultPlan()
        self.transfers = TransferRegistry()
        self.programs = GuestPrograms()  # started by StartProgramInGuest, in every dialect
        self.port = 0
        self._stats_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.withheld: dict[str, set[str]] = {}  # vCenter user -> privileges (Query, Modify, Execute) not granted
        self._turns: dict[str, threading.Lock] = {}  # VM name -> its guest's one operation at a time
        self._turns_lock = threading.Lock()
        self._held = threading.local()  # the turn this request thread holds, released by end_call

    @property
    def version(self) -> tuple[int, ...]:
        return version_tuple(self.settings.vc_version)

    def has(self, since: tuple[int, ...]) -> bool:
        """Whether this vCenter's version has an API that exists from `since` on."""
        return self.version >= since

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

    def guest_call(self, operation: str, token: str | None, vm_id: str, user: str | None, password: str | None,
                   privilege: str | None = None) -> tuple[VM, GuestFS]:
        """The checks of every guest operation, in a real vCenter's order; returns the VM and its file system.
        `privilege` (Query, Modify, Execute) overrides what the operation needs (a REST download needs Modify)."""
        vm = self.inventory.by_id(vm_id) if isinstance(vm_id, str) else None
        self._take_turn(vm)
        self.begin(operation, vm.name if vm else None)
        if vm is not None and vm.latency_ms:
            time.sleep(vm.latency_ms / 1000)
        session = self.session(token)
        if vm is None:
            raise SimFault(
                "ManagedObjectNotFound",
                f"The object 'vim.VirtualMachine:{vm_id}' has already been deleted or has not been completely created",
                obj={"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": str(vm_id)},
            )
        self.check_privilege(session.user, privilege or GUEST_PRIVILEGES.get(operation), vm)
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

    def check_privilege(self, user: str, privilege: str | None, vm: VM) -> None:
        """NoPermission (REST: 403 UNAUTHORIZED) when the vCenter user lacks the privilege on the VM."""
        if privilege and privilege in self.withheld.get(user, ()):
            full = PRIVILEGE_PREFIX + privilege
            ref = {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": vm.id}
            raise SimFault("NoPermission", f"Permission to perform this operation was denied: {full} on {vm.name}",
                           object=ref, privilegeId=full,
                           missingPrivileges=[{"_typeName": "NoPermissionEntityPrivileges", "entity": ref,
                                               "privilegeIds": [full]}])

    def set_power(self, vm: VM, state: str) -> None:
        vm.power_state = state
        if state != "poweredOn":
            self.transfers.abort_vm(vm.name)  # URLs die and in-flight transfers are cut on any power change

    def migrate(self, vm: VM, host: Host) -> None:
        """vMotion: the VM runs on `host` from now on; its transfer URLs die and transfers in flight are cut."""
        vm.host = host.id
        self.transfers.abort_vm(vm.name)

    def host_of(self, vm: VM) -> Host:
        return self.hosts.by_id(vm.host) or self.hosts.first

    def transfer_url(self, transfer_id: int, token: str) -> str:
        """As vCenter gives it: the VM's host by its inventory name (with --hosts), else `*` (the server called,
        as ESXi itself answers) or the --transfer-host name. The simulated hosts listen on our port, not 443."""
        scheme = "https" if self.settings.tls else "http"
        if self.settings.hosts:
            t = self.transfers.get(transfer_id)
            vm = self.inventory.by_name(t.vm) if t is not None else None
            host = self.host_of(vm).name if vm is not None else self.hosts.first.name
            netloc = f"{host}:{self.port}"
        elif self.settings.transfer_host == "*" and not self.settings.transfer_port:
            netloc = "*"
        else:
            netloc = f"{self.settings.transfer_host}:{self.port}"
        return f"{scheme}://{netloc}/guestFile?id={transfer_id}&token={token}"


def _default_host_name(settings: Settings) -> str:
    return settings.transfer_host if settings.transfer_host != "*" else "localhost"
