"""The guest half of `guestfs-mount check`, for one VM: its state, the guest login, a listing of `/` (or `C:\\`), a
tiny download of a file it listed (reaching the ESXi host the transfer URL names), with --write an upload to a
temporary file that is read back and deleted, and with `exec = true` a harmless guest program (`/bin/ln --version`).
Every call is the mount's own (`GuestFiles`, `guestprograms`)."""

from __future__ import annotations

import errno
import io
import time
from dataclasses import dataclass

from guestfs_mount.check.advice import (TOOLS, before_the_guest, for_guest_error, for_transfer, grant,
                                        missing_privileges)
from guestfs_mount.check.report import Report
from guestfs_mount.vsphere import guestprograms
from guestfs_mount.vsphere.base import DialectClient
from guestfs_mount.vsphere.faults import ConnectionFailed, GuestFileError, GuestLoginError, VSphereError
from guestfs_mount.vsphere.model import FileType, GuestCredentials, GuestFileInfo, VMInfo

SMALL = 1 << 20  # the download is of a file at most this big
TRIES = 3  # files to try when the guest user may not read one
UNREADABLE = (errno.EACCES, errno.EBUSY, errno.ENOENT)  # a file to pass over (a Windows log file is locked)
PROGRAM_TIMEOUT = 15.0  # seconds to wait for the harmless program's exit code


@dataclass
class Login:
    table: str  # '[vms."web-*"]'
    creds: GuestCredentials
    exec: bool


async def check_vm(report: Report, client: DialectClient, vm: VMInfo, login: Login, write: bool) -> None:
    step = _Steps(report, vm.name)
    if not vm.powered_on:
        state = {"poweredOff": "powered off"}.get(vm.power_state, vm.power_state)
        step.fail("vm", state, "power it on: guest operations need a running VM",
                  details={"power_state": vm.power_state})
        return step.skip_rest("the VM is not powered on", write, login.exec)
    if not vm.tools_ready:
        step.fail("vm", "powered on, but VMware Tools is not running (guest operations not ready)", TOOLS,
                  details={"power_state": vm.power_state, "tools_running": False})
        return step.skip_rest("VMware Tools is not running", write, login.exec)
    step.ok("vm", f"powered on, Tools running, {vm.guest_family or 'guest family not reported'}; "
            f"guest login {login.creds.username} from {login.table}",
            details={"power_state": vm.power_state, "tools_running": True, "guest_family": vm.guest_family,
                     "login_table": login.table, "host": vm.host})
    root = "C:\\" if vm.is_windows else "/"
    try:
        entries = [e async for e in client.list_dir(vm.id, login.creds, root)]
    except VSphereError as e:
        if before_the_guest(e):
            step.skip("guest-login", "vCenter refused the call before the guest saw it")
        elif isinstance(e, GuestLoginError):
            step.fail("guest-login", f"as {login.creds.username}: {e}", for_guest_error(e, login.table))
            return step.skip_rest("the guest login failed", write, login.exec, after="listing")
        else:
            step.ok("guest-login", f"as {login.creds.username}")
        step.fail("listing", f"{root}: {e}", for_guest_error(e, login.table), privileges=missing_privileges(e))
        return step.skip_rest("the listing failed", write, login.exec, after="esxi-host")
    step.ok("guest-login", f"as {login.creds.username}")
    names = sorted(e.name for e in entries)
    shown = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
    step.ok("listing", f"{root}: {len(entries)} {'entry' if len(entries) == 1 else 'entries'}{shown}",
            details={"path": root, "entries": len(entries)})
    await _download(step, client, vm, login, root, entries)
    if write:
        await _upload(step, client, vm, login)
    if login.exec:
        await _program(step, client, vm, login)


class _Steps:
    """Report steps of one VM."""

    def __init__(self, report: Report, vm: str):
        self.report, self.vm = report, vm

    def ok(self, step_id: str, text: str, **kw) -> None:
        self.report.ok(step_id, text, vm=self.vm, **kw)

    def fail(self, step_id: str, text: str, advice: str | None = None, **kw) -> None:
        self.report.fail(step_id, text, advice, vm=self.vm, **kw)

    def warn(self, step_id: str, text: str, advice: str | None = None, **kw) -> None:
        self.report.warn(step_id, text, advice, vm=self.vm, **kw)

    def skip(self, step_id: str, why: str) -> None:
        self.report.skip(step_id, why, vm=self.vm)

    def skip_rest(self, why: str, write: bool, runs: bool, after: str | None = None) -> None:
        order = ["guest-login", "listing", "esxi-host", "download"] + (["upload"] if write else []) + (
            ["programs"] if runs else [])
        for step_id in order[order.index(after):] if after else order:
            self.skip(step_id, why)


def _candidates(entries: list[GuestFileInfo]) -> list[GuestFileInfo]:
    """Small regular files, the smallest non-empty first."""
    small = [e for e in entries if e.type is FileType.FILE and e.size <= SMALL]
    return sorted(small, key=lambda e: (e.size == 0, e.size, e.name))


def _join(directory: str, name: str) -> str:
    separator = "\\" if "\\" in directory else "/"
    return directory.rstrip(separator) + separator + name


async def _download(step: _Steps, client: DialectClient, vm: VMInfo, login: Login, root: str,
                    entries: list[GuestFileInfo]) -> None:
    files = [(root, e) for e in _candidates(entries)]
    inner = "C:\\Windows" if vm.is_windows else "/etc"  # where small files always are: a Linux `/` often has none
    if not files:
        try:
            files = [(inner, e) for e in _candidates([e async for e in client.list_dir(vm.id, login.creds, inner)])]
        except VSphereError:
            files = []
    if not files:
        step.skip("esxi-host", "nothing to download")
        step.warn("download", f"no small file in {root} (or {inner}) to download: transfers are not checked",
                  "name a VM that has one with --vm, or add --write (an upload and a download of a temporary file)")
        return
    error: VSphereError | None = None
    for directory, entry in files[:TRIES]:
        path = _join(directory, entry.name)
        client.routes.pop(vm.id, None)
        try:
            got = await _read(client, vm, login, path)
        except VSphereError as e:
            error = e
            if isinstance(e, GuestFileError) and not before_the_guest(e) and e.errno in UNREADABLE:
                continue  # this file is not readable by the guest user, locked, or went away: another one
            break
        _host(step, client.routes.get(vm.id), None)
        step.ok("download", f"{path}: {len(got)} bytes", details={"path": path, "bytes": len(got)})
        return
    assert error is not None
    route = client.routes.get(vm.id)
    if route is not None and isinstance(error, ConnectionFailed):
        _host(step, route, error)
        step.skip("download", "the ESXi host could not be reached")
        return
    if route is not None:
        _host(step, route, None)
    else:
        step.skip("esxi-host", "no transfer URL was given")
    step.fail("download", f"{error}", for_guest_error(error, login.table), privileges=missing_privileges(error))


async def _read(client: DialectClient, vm: VMInfo, login: Login, path: str) -> bytes:
    async with await client.open_read(vm.id, login.creds, path) as transfer:
        return b"".join([chunk async for chunk in transfer.chunks()])


def _host(step: _Steps, route, error: VSphereError | None) -> None:
    if route is None:
        return
    if route.pin:
        trust = f"certificate pinned: SHA-256 {route.pin}"
    else:
        trust = "certificate verified like vCenter's"
    # a `*` in the URL: ESXi answering for itself, i.e. the server the API calls went to
    who = route.host if route.host_id else f"{route.host} (the URL named *: the server called)"
    via = f", TLS name {route.sni}" if route.sni else ""
    details = {"host": route.host, "host_id": route.host_id, "address": route.address, "sni": route.sni,
               "pin": route.pin}
    if error is None:
        step.ok("esxi-host", f"{who} at {route.address}{via}; {trust}", details=details)
    else:
        step.fail("esxi-host", str(error), for_transfer(error), details=details)  # it names the host and address


async def _upload(step: _Steps, client: DialectClient, vm: VMInfo, login: Login) -> None:
    data = f"guestfs-mount check {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode()
    path = None
    try:
        path = await client.make_temp(vm.id, login.creds, prefix="guestfs-check-", suffix=".tmp")
        await client.upload(vm.id, login.creds, path, io.BytesIO(data), len(data), overwrite=True)
        back = await _read(client, vm, login, path)
        if back != data:
            step.fail("upload", f"{path}: wrote {len(data)} bytes, read back {len(back)} different ones",
                      "the guest's file system changed the file: see the guest")
            return
    except VSphereError as e:
        privileges = missing_privileges(e)
        step.fail("upload", f"{path or 'a temporary file'}: {e}",
                  for_transfer(e) if isinstance(e, ConnectionFailed) else for_guest_error(e, login.table),
                  privileges=privileges)
        return
    finally:
        removed = await _remove(client, vm, login, path) if path else None
    if removed is not None:
        step.warn("upload", f"{path}: {len(data)} bytes written and read back, but not deleted: {removed}",
                  f"delete {path} in the guest")
    else:
        step.ok("upload", f"{len(data)} bytes to {path}, read back, deleted", details={"path": path,
                                                                                      "bytes": len(data)})


async def _remove(client: DialectClient, vm: VMInfo, login: Login, path: str) -> str | None:
    try:
        await client.remove_file(vm.id, login.creds, path)
    except VSphereError as e:
        return str(e)
    return None


async def _program(step: _Steps, client: DialectClient, vm: VMInfo, login: Login) -> None:
    if vm.is_windows:
        step.warn("programs", "exec = true does nothing in a Windows guest (links are made only in Linux guests)",
                  f"drop exec = true from {login.table} for Windows VMs")
        return
    what = f"{guestprograms.LN} --version"
    try:
        pid = await guestprograms.start(client, vm.id, login.creds, guestprograms.program(guestprograms.LN,
                                                                                           ["--version"]))
        code = await guestprograms.exit_code(client, vm.id, login.creds, pid, what, PROGRAM_TIMEOUT)
    except guestprograms.ProgramNotStarted as e:
        privileges = missing_privileges(e)
        if privileges:
            advice = (f"{grant(privileges)}; or drop exec = true from {login.table} (ln in the mount then gives "
                      f"EPERM)")
        else:
            advice = (f"{guestprograms.LN} cannot be run in this guest: symlinks and hard links cannot be made there; "
                      f"drop exec = true from {login.table}")
        step.fail("programs", f"{what}: {e}", advice, privileges=privileges)
        return
    except VSphereError as e:
        step.fail("programs", f"{what}: {e}", for_guest_error(e, login.table), privileges=missing_privileges(e))
        return
    if code != 0:
        step.fail("programs", f"{what} started, but exited with {code}",
                  f"run {what} in the guest to see why; links need a working {guestprograms.LN}")
        return
    step.ok("programs", f"{what} ran in the guest (exit 0): the mount can make links there",
            details={"program": what, "exit_code": code})
