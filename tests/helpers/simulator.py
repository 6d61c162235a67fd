"""Start the vCenter simulator (`python -m guestfs_mount.sim`) as a process for a test, and drive its /_sim controls."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

LISTEN_PREFIX = "guestfs-sim: listening on "
CA_PREFIX = "guestfs-sim: CA certificate at "


@dataclass
class Simulator:
    """A running simulator process and the credentials it accepts."""

    url: str
    root: Path
    ca_path: str | None
    process: subprocess.Popen
    vc_user: str = "administrator@vsphere.local"
    vc_password: str = "vmware"
    guest_user: str = "root"
    guest_password: str = "vmware"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx's `verify=` wants for this simulator: a context trusting its CA, or True without TLS."""
        return ssl.create_default_context(cafile=self.ca_path) if self.ca_path else True

    def vm_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _control(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        with httpx.Client(base_url=self.url, verify=self.verify, timeout=10) as client:
            response = client.request(method, path, json=body)
        response.raise_for_status()
        return response

    def stats(self) -> dict[str, int]:
        return self._control("GET", "/_sim/stats").json()["calls"]

    def reset_stats(self) -> None:
        self._control("POST", "/_sim/stats/reset", {})

    def fault(self, operation: str, fault: str, times: int = 1, vm: str | None = None) -> None:
        self._control("POST", "/_sim/faults", {"operation": operation, "fault": fault, "times": times, "vm": vm})

    def power(self, vm: str, state: str) -> None:
        self._control("POST", f"/_sim/vms/{vm}/power", {"state": state})

    def tools(self, vm: str, running: bool) -> None:
        self._control("POST", f"/_sim/vms/{vm}/tools", {"running": running})

    def latency(self, vm: str, ms: int) -> None:
        """Make every guest operation on this VM take `ms` longer (a slow guest)."""
        self._control("POST", f"/_sim/vms/{vm}/latency", {"ms": ms})

    def throttle(self, vm: str, bytes_per_s: int) -> None:
        """Cap this VM's /guestFile GET and PUT bodies at `bytes_per_s` (0: unlimited), also for those in flight."""
        self._control("POST", f"/_sim/vms/{vm}/throttle", {"bytes_per_s": bytes_per_s})

    def expire_sessions(self) -> None:
        self._control("POST", "/_sim/sessions/expire", {})

    def rotate_sessions(self) -> None:
        """Every session gets a new id with its next VI/JSON answer (the old one dies then)."""
        self._control("POST", "/_sim/sessions/rotate", {})

    def migrate(self, vm: str, host: str | None = None) -> None:
        """vMotion `vm` to `host` (a name or id; default: the next host); its transfers in flight are cut."""
        self._control("POST", f"/_sim/vms/{vm}/migrate", {"host": host} if host else {})

    def withhold(self, *privileges: str, user: str | None = None) -> None:
        """The vCenter user (default: ours) lacks these of Query, Modify, Execute from now on (none: all back)."""
        self._control("POST", "/_sim/privileges", {"user": user or self.vc_user, "withhold": list(privileges)})


def _stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextlib.contextmanager
def running_simulator(
    root, *, log_path, tls: bool = False, latency_ms: int = 0, extra_args=(), timeout: float = 20
) -> Iterator[Simulator]:
    """Run the simulator over `root` (its stderr goes to `log_path`) until the block ends."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "guestfs_mount.sim", "--root", str(root), "--listen", "127.0.0.1:0"]
    if tls:
        args.append("--tls")
    if latency_ms:
        args += ["--latency-ms", str(latency_ms)]
    args += list(extra_args)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env, cwd=repo)
    try:
        lines: queue.Queue = queue.Queue()

        def read_stdout():
            for line in process.stdout:
                lines.put(line.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        want = 2 if tls else 1
        got: list[str] = []
        while len(got) < want:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"guestfs-sim printed no address within {timeout}s (log: {log_path})") from None
            if line is None:
                raise RuntimeError(f"guestfs-sim exited with {process.wait(timeout)} (log: {log_path})")
            got.append(line)
        if not got[0].startswith(LISTEN_PREFIX):
            raise RuntimeError(f"unexpected first line from guestfs-sim: {got[0]!r}")
        url = got[0][len(LISTEN_PREFIX) :]
        ca_path = got[1][len(CA_PREFIX) :] if tls else None
        opts = {"--vc-user": "vc_user", "--vc-password": "vc_password", "--guest-user": "guest_user", "--guest-password": "guest_password"}
        creds = {}
        extra = list(extra_args)
        for i, arg in enumerate(extra[:-1]):
            if arg in opts:
                creds[opts[arg]] = extra[i + 1]
        yield Simulator(url=url, root=root, ca_path=ca_path, process=process, **creds)
    finally:
        _stop(process)
        if process.stdout:
            process.stdout.close()


class ViCaller:
    """A bare VI/JSON caller for simulator tests: logs in, then `call(mo_type, mo_id, method, body)`."""

    def __init__(self, sim: Simulator, release: str = "8.0.1.0", login: bool = True):
        self.sim = sim
        self.base = f"/sdk/vim25/{release}"
        self._ids: dict[str, str] = {}
        self.http = httpx.Client(base_url=sim.url, verify=sim.verify, timeout=30)
        if login:
            r = self.post("SessionManager", "SessionManager", "Login", {"userName": sim.vc_user, "password": sim.vc_password})
            r.raise_for_status()
            self.http.headers["vmware-api-session-id"] = r.headers["vmware-api-session-id"]

    def post(self, mo_type: str, mo_id: str, method: str, body: dict | None = None) -> httpx.Response:
        return self.http.post(f"{self.base}/{mo_type}/{mo_id}/{method}", json=body or {})

    def get(self, mo_type: str, mo_id: str, prop: str) -> httpx.Response:
        return self.http.get(f"{self.base}/{mo_type}/{mo_id}/{prop}")

    def vm_id(self, name: str) -> str:
        """The VM's moref value (looked up once: ids are stable for the simulator's life)."""
        if name in self._ids:
            return self._ids[name]
        r = self.post("SearchIndex", "SearchIndex", "FindByInventoryPath", {"inventoryPath": f"Datacenter/vm/{name}"})
        r.raise_for_status()
        self._ids[name] = r.json()["value"]
        return self._ids[name]

    def guest(self, method: str, vm: str, auth: dict | None = None, **body) -> httpx.Response:
        """Call a GuestFileManager method on VM `vm` (a name) with the simulator's guest login."""
        auth = auth or {
            "_typeName": "NamePasswordAuthentication",
            "interactiveSession": False,
            "username": self.sim.guest_user,
            "password": self.sim.guest_password,
        }
        vm_ref = {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": self.vm_id(vm)}
        return self.post("GuestFileManager", "guestOperationsFileManager", method, {"vm": vm_ref, "auth": auth, **body})

    def close(self) -> None:
        self.http.close()


class RestCaller:
    """A bare Automation REST caller for simulator tests: creates a session, then `post`/`get` under /api."""

    def __init__(self, sim: Simulator, login: bool = True):
        self.sim = sim
        self._ids: dict[str, str] = {}
        self.http = httpx.Client(base_url=sim.url, verify=sim.verify, timeout=30)
        if login:
            r = self.http.post("/api/session", auth=(sim.vc_user, sim.vc_password))
            r.raise_for_status()
            self.http.headers["vmware-api-session-id"] = r.json()

    def vm_id(self, name: str) -> str:
        """The VM's id (looked up once: ids are stable for the simulator's life)."""
        if name not in self._ids:
            r = self.http.get("/api/vcenter/vm", params={"names": name})
            r.raise_for_status()
            self._ids[name] = r.json()[0]["vm"]
        return self._ids[name]

    def creds(self, password: str | None = None) -> dict:
        return {
            "interactive_session": False,
            "type": "USERNAME_PASSWORD",
            "user_name": self.sim.guest_user,
            "password": self.sim.guest_password if password is None else password,
        }

    def fs(self, vm: str, sub: str, action: str, password: str | None = None, **body) -> httpx.Response:
        """POST /api/vcenter/vm/{vm}/guest/filesystem{sub}?action=..., with guest credentials added."""
        url = f"/api/vcenter/vm/{self.vm_id(vm)}/guest/filesystem{sub}"
        return self.http.post(url, params={"action": action}, json={"credentials": self.creds(password), **body})

    def close(self) -> None:
        self.http.close()
