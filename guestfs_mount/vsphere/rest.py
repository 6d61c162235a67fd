"""The Automation REST dialect (`/api/...`, vCenter 7.0U2+). Listings carry only name, type and size, so a full
record of one file costs a `files/{path}?action=get`; a read's size comes from the GET's Content-Length
(API.md §2)."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx
import trio

from guestfs_mount.vsphere.base import DialectClient, basename, format_time, parse_time
from guestfs_mount.vsphere.faultmap import rest_error
from guestfs_mount.vsphere.faults import AuthenticationError, ProtocolError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig, ReadTransfer
from guestfs_mount.vsphere.http import decode_json, expect, field, send
from guestfs_mount.vsphere.model import (FileAttributes, FileType, GuestCredentials, GuestFileInfo, GuestProcess,
                                       GuestProgram, VMInfo)
from guestfs_mount.vsphere.transfer import HttpReadTransfer, put_file, resolve_host

log = logging.getLogger(__name__)

FILE_TYPES = {"FILE": FileType.FILE, "DIRECTORY": FileType.DIRECTORY, "SYMLINK": FileType.SYMLINK}
POWER_STATES = {"POWERED_ON": "poweredOn", "POWERED_OFF": "poweredOff", "SUSPENDED": "suspended"}
GUEST_FAMILIES = {"LINUX": "linuxGuest", "WINDOWS": "windowsGuest", "DARWIN": "darwinGuestFamily",
                  "NETWARE": "netwareGuest", "SOLARIS": "solarisGuest", "OTHER": "otherGuestFamily"}


def credentials(creds: GuestCredentials) -> dict:
    if creds.saml_token:
        out = {"interactive_session": False, "type": "SAML_BEARER_TOKEN", "saml_token": creds.saml_token}
        if creds.username:
            out["user_name"] = creds.username
        return out
    return {"interactive_session": False, "type": "USERNAME_PASSWORD", "user_name": creds.username,
            "password": creds.password or ""}


class RestClient(DialectClient):
    dialect = "rest"

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient):
        super().__init__(config, http)
        self._vm_windows: dict[str, bool] = {}

    # ------------------------------------------------------------------------------------- plumbing
    async def _request(self, method: str, url: str, body: dict | None = None, *, guest: bool = False,
                       path: str | None = None, vm: str | None = None, what: str = "") -> Any:
        what = what or url.split("?")[0]
        for attempt in (0, 1):
            token = self._token
            kwargs = {"json": body} if body is not None else {}
            response = await send(self.http, method, url, what, headers=self.session_headers(), **kwargs)
            if response.status_code == 204:
                return None
            if 200 <= response.status_code < 300:
                return decode_json(response, what)
            payload = decode_json(response, what)
            if not isinstance(payload, dict) or not isinstance(payload.get("error_type"), str):
                raise ProtocolError(f"{what}: HTTP {response.status_code} with no vAPI error in the body")
            error = rest_error(response.status_code, payload, path=path, vm=vm)
            if response.status_code == 401 and attempt == 0:
                # on a guest call, 401 is either our session or the guest login: ask the session itself
                if not guest or not await self._session_alive():
                    await self.relogin(token)
                    continue
            raise error
        raise AssertionError("unreachable")

    async def _session_alive(self) -> bool:
        response = await send(self.http, "GET", "/api/session", "session check", headers=self.session_headers())
        return response.status_code == 200

    def _fs(self, vm: str, tail: str) -> str:
        return f"/api/vcenter/vm/{quote(vm, safe='')}/guest/filesystem{tail}"

    async def _guest(self, method: str, vm: str, creds: GuestCredentials, url: str, guest_path: str, **body) -> Any:
        """A guest call; `guest_path` names the file in errors and logs (the body may carry it as `path` too)."""
        full = {"credentials": credentials(creds), **body}
        what = f"{url.split('?')[-1]} {guest_path}"
        return await self.guest_call(
            vm, what, lambda: self._request(method, url, full, guest=True, path=guest_path, vm=vm, what=what))

    # ------------------------------------------------------------------------------------- session
    async def start(self) -> None:
        await self.login()

    async def login(self) -> None:
        response = await send(self.http, "POST", "/api/session", "login",
                              auth=httpx.BasicAuth(self.config.username, self.config.password))
        if response.status_code not in (200, 201):
            payload = decode_json(response, "login")
            if response.status_code == 401:
                raise AuthenticationError("vCenter refused the login (401 UNAUTHENTICATED)")
            raise rest_error(response.status_code, payload)
        token = decode_json(response, "login")
        self._token = expect(token, str, "session id")

    async def logout(self) -> None:
        await send(self.http, "DELETE", "/api/session", "logout", headers=self.session_headers())

    # ------------------------------------------------------------------------------------- inventory
    async def list_vms(self) -> list[VMInfo]:
        listed = expect(await self._request("GET", "/api/vcenter/vm"), list, "VM list")
        vms: list[VMInfo] = []

        async def describe(summary: Any) -> None:
            vm = field(summary, "vm", str, "VM summary")
            power = POWER_STATES.get(field(summary, "power_state", str, "VM summary"), "poweredOff")
            family, ready = None, False
            if power == "poweredOn":
                # two calls per running VM: REST has no one-call inventory of guest state
                try:
                    identity = await self._request("GET", f"/api/vcenter/vm/{vm}/guest/identity")
                    family = GUEST_FAMILIES.get(field(identity, "family", str, "guest identity", default=""))
                except VSphereError:
                    family = None  # Tools not running: 503
                try:
                    ops = await self._request("GET", f"/api/vcenter/vm/{vm}/guest/operations")
                    ready = field(ops, "guest_operations_ready", bool, "guest operations", default=False)
                except VSphereError:
                    ready = False
            info = VMInfo(id=vm, name=field(summary, "name", str, "VM summary"), power_state=power,
                          guest_family=family, tools_ready=ready)
            self._vm_windows[vm] = info.is_windows
            vms.append(info)

        limiter = trio.CapacityLimiter(8)

        async def bounded(summary: Any) -> None:
            async with limiter:
                await describe(summary)

        async with trio.open_nursery() as nursery:
            for summary in listed:
                nursery.start_soon(bounded, summary)
        return sorted(vms, key=lambda v: v.id)

    # ------------------------------------------------------------------------------------- files
    def _info(self, record: Any, name: str) -> GuestFileInfo:
        what = "file info"
        kind = FILE_TYPES.get(field(record, "type", str, what))
        if kind is None:
            raise ProtocolError(f"unexpected answer from vCenter: file type {record.get('type')!r}")
        attrs = field(record, "attributes", dict, what, default={})
        posix = field(attrs, "posix_attributes", dict, what, default={})
        perms = field(posix, "permissions", str, what, default=None)
        try:
            permissions = int(perms, 8) & 0o7777 if perms is not None else None
        except ValueError:
            raise ProtocolError(f"unexpected answer from vCenter: permissions {perms!r} are not octal") from None
        return GuestFileInfo(
            name=name,
            type=kind,
            size=field(record, "size", int, what, default=0),
            permissions=permissions,
            uid=field(posix, "owner", int, what, default=None),
            gid=field(posix, "group", int, what, default=None),
            mtime=parse_time(attrs.get("last_modified"), "last_modified"),
            atime=parse_time(attrs.get("last_accessed"), "last_accessed"),
            symlink_target=field(attrs, "symlink_target", str, what, default=None),
        )

    async def list_dir(self, vm: str, creds: GuestCredentials, path: str) -> AsyncIterator[GuestFileInfo]:
        index = 0
        while True:
            page = await self._guest("POST", vm, creds, self._fs(vm, "/files?action=list"), path, path=path,
                                     iteration={"size": self.config.list_page_size, "index": index})
            files = field(page, "files", list, "file list", default=[])
            for entry in files:
                name = field(entry, "filename", str, "file list entry")
                if name in (".", ".."):
                    continue
                yield self._info(entry, name)
            index += len(files)
            if field(page, "status", str, "file list", default="END_OF_DATA") != "READY" or not files:
                return

    async def stat(self, vm: str, creds: GuestCredentials, path: str) -> GuestFileInfo:
        url = self._fs(vm, f"/files/{quote(path, safe='')}?action=get")
        return self._info(await self._guest("POST", vm, creds, url, path), basename(path))

    async def _initiate(self, vm: str, creds: GuestCredentials, path: str, spec: dict) -> str:
        url = await self._guest("POST", vm, creds, self._fs(vm, "?action=create"), path, spec=spec)
        return resolve_host(expect(url, str, "transfer URL"), self.config.url)

    async def open_read(self, vm: str, creds: GuestCredentials, path: str) -> ReadTransfer:
        async def new_url() -> str:
            return await self._initiate(vm, creds, path, {"path": path})

        url = await new_url()
        return HttpReadTransfer(self.transfers.get(None), url, new_url, None, None, f"{path} on {vm}")

    def _attributes(self, vm: str, attrs: FileAttributes | None) -> dict:
        out: dict = {}
        if attrs is None:
            return out
        if attrs.mtime is not None:
            out["last_modified"] = format_time(attrs.mtime)
        if attrs.atime is not None:
            out["last_accessed"] = format_time(attrs.atime)
        if not self._vm_windows.get(vm):
            posix = {}
            if attrs.permissions is not None:
                posix["permissions"] = f"{attrs.permissions:04o}"
            if attrs.uid is not None:
                posix["owner_id"] = attrs.uid
            if attrs.gid is not None:
                posix["group_id"] = attrs.gid
            if posix:
                out["posix"] = posix
        return out

    async def upload(self, vm, creds, path, source, size, attrs=None, overwrite=True, progress=None) -> None:
        spec = {"path": path, "attributes": {"size": size, "overwrite": overwrite, **self._attributes(vm, attrs)}}

        async def new_url() -> str:
            return await self._initiate(vm, creds, path, spec)

        url = await new_url()
        await put_file(self.transfers.get(None), url, new_url, source, size, progress, f"{path} on {vm}")

    async def mkdir(self, vm, creds, path, parents=False) -> None:
        await self._guest("POST", vm, creds, self._fs(vm, "/directories?action=create"), path, path=path,
                          create_parents=parents)

    async def remove_file(self, vm, creds, path) -> None:
        await self._guest("POST", vm, creds, self._fs(vm, f"/files/{quote(path, safe='')}?action=delete"), path)

    async def remove_dir(self, vm, creds, path, recursive=False) -> None:
        await self._guest("POST", vm, creds, self._fs(vm, "/directories?action=delete"), path, path=path,
                          recursive=recursive)

    async def move_file(self, vm, creds, src, dst, overwrite=False) -> None:
        await self._guest("POST", vm, creds, self._fs(vm, "/files?action=move"), src, path=src, new_path=dst,
                          overwrite=overwrite)

    async def move_dir(self, vm, creds, src, dst) -> None:
        await self._guest("POST", vm, creds, self._fs(vm, "/directories?action=move"), src, path=src, new_path=dst)

    async def set_attributes(self, vm, creds, path, attrs) -> None:
        attributes = self._attributes(vm, attrs)
        if not attributes:
            return
        await self._guest("POST", vm, creds, self._fs(vm, "/files?action=update"), path, path=path,
                          file_attributes=attributes)

    async def make_temp(self, vm, creds, prefix="", suffix="", directory=None, is_dir=False) -> str:
        kind = "directories" if is_dir else "files"
        body = {"prefix": prefix, "suffix": suffix}
        if directory:
            body["parent_path"] = directory
        result = await self._guest("POST", vm, creds, self._fs(vm, f"/{kind}?action=createTemporary"),
                                   directory or "(temp)", **body)
        return expect(result, str, "temporary path")

    # ------------------------------------------------------------------------------------- programs
    def _processes(self, vm: str, tail: str) -> str:
        return f"/api/vcenter/vm/{quote(vm, safe='')}/guest/processes{tail}"

    async def start_program(self, vm, creds, program: GuestProgram) -> int:
        spec: dict = {"path": program.path, "arguments": program.arguments}
        if program.working_directory:
            spec["working_directory"] = program.working_directory
        if program.env is not None:
            spec["environment_variables"] = dict(program.env)
        pid = await self._guest("POST", vm, creds, self._processes(vm, "?action=create"), program.path, spec=spec)
        return expect(pid, int, "process id")

    async def list_processes(self, vm, creds, pids) -> list[GuestProcess]:
        found = []
        for pid in pids:
            try:
                info = await self._guest("POST", vm, creds, self._processes(vm, f"/{int(pid)}?action=get"),
                                         f"process {pid}")
            except VSphereError as e:
                if getattr(e, "fault", None) == "NOT_FOUND":
                    continue  # the agent has no record of it (any more)
                raise
            found.append(GuestProcess(pid=int(pid), exit_code=field(info, "exit_code", int, "process info", default=None),
                                      end_time=parse_time(info.get("finished") if isinstance(info, dict) else None,
                                                          "finished")))
        return found
