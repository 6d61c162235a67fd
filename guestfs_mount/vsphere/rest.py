"""The Automation REST dialect (`/api/...`, vCenter 7.0U2+). Listings carry only name, type and size, so a full
record of one file costs a `files/{path}?action=get`; a read's size comes from the GET's Content-Length
(API.md §2). REST cannot tell which certificate an ESXi host has: where the same vCenter speaks VI/JSON, host
knowledge comes from there (a second session, opened at the first transfer that names a host)."""

from __future__ import annotations

import logging
import re
from typing import Any, AsyncIterator, Sequence
from urllib.parse import quote, urlencode, urlsplit

import httpx
import trio

from guestfs_mount.vsphere.base import DialectClient, as_link, basename, format_time, paged_listing, parse_time
from guestfs_mount.vsphere.faultmap import rest_error
from guestfs_mount.vsphere.faults import (
    AuthenticationError,
    GuestFileError,
    ProtocolError,
    UnsupportedVCenter,
    VSphereError,
)
from guestfs_mount.vsphere.guestfiles import ClientConfig, ReadTransfer
from guestfs_mount.vsphere.http import decode_json, expect, field, make_api_client, send
from guestfs_mount.vsphere.model import (FileAttributes, FileType, GuestCredentials, GuestFileInfo, GuestProcess,
                                       GuestProgram, VMInfo)
from guestfs_mount.vsphere.transfer import HttpReadTransfer, put_file
from guestfs_mount.vsphere.soap import SoapClient, speaks_soap
from guestfs_mount.vsphere.vijson import ViJsonClient, speaks_vi_json

log = logging.getLogger(__name__)

FILE_TYPES = {"FILE": FileType.FILE, "DIRECTORY": FileType.DIRECTORY, "SYMLINK": FileType.SYMLINK}
POWER_STATES = {"POWERED_ON": "poweredOn", "POWERED_OFF": "poweredOff", "SUSPENDED": "suspended"}
GUEST_FAMILIES = {"LINUX": "linuxGuest", "WINDOWS": "windowsGuest", "DARWIN": "darwinGuestFamily",
                  "NETWARE": "netwareGuest", "SOLARIS": "solarisGuest", "OTHER": "otherGuestFamily"}
GUEST_FILES_SINCE = (7, 0, 2)  # REST guest file operations: vCenter 7.0U2, API 7.0.2.0
# what to use on a vCenter older than that (VI/JSON needs 8.0U1; SOAP works on every vCenter)
OLD_VCENTER_ADVICE = 'use api = "soap" (or "auto"): its SOAP API (/sdk) reaches the guest files of every vCenter'
PRIVILEGE = "VirtualMachine.GuestOperations."


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

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient, vi_json: bool | None = None):
        super().__init__(config, http)
        self._vm_windows: dict[str, bool] = {}
        self._speaks_vi_json = vi_json  # None: not asked yet
        self._vi_class: type[ViJsonClient] | None = None  # VI/JSON, or SOAP on a vCenter before 8.0U1
        self._vi: ViJsonClient | None = None  # host knowledge through it, logged in when first needed
        self._vi_lock = trio.Lock()
        self._vi_started = False

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
        try:
            return await self.guest_call(
                vm, what, lambda: self._request(method, url, full, guest=True, path=guest_path, vm=vm, what=what))
        except GuestFileError as e:
            if e.fault != "UNAUTHORIZED":
                raise
            # REST says 403 both for a guest that denies access and for a vCenter privilege that is missing
            reads = url.endswith(("action=list", "action=get"))
            needed = "Query" if reads else "Execute" if "/guest/processes" in url else "Modify"
            transfers = f" (REST transfers, downloads too, need {PRIVILEGE}Modify)" if needed == "Modify" else ""
            raise type(e)(f"{e}: the guest user may not do this, or the vCenter user lacks {PRIVILEGE}{needed} on "
                          f"the VM{transfers}", errno=e.errno,
                          fault=e.fault, path=e.path, vm=e.vm) from None

    # ------------------------------------------------------------------------------------- session
    async def start(self) -> None:
        await self.login()
        await self._check_version()
        await self._find_host_source()

    async def _check_version(self) -> None:
        """Refuse at once a vCenter too old for REST guest operations (appliance version, since 6.7)."""
        response = await send(self.http, "GET", "/api/appliance/system/version", "appliance version",
                              headers=self.session_headers())
        if response.status_code != 200:
            log.debug("vCenter did not tell its version (HTTP %s); going on", response.status_code)
            return
        payload = decode_json(response, "appliance version")
        if isinstance(payload, dict):
            self._about = {k: payload[k] for k in ("product", "version", "build") if isinstance(payload.get(k), str)}
        version = payload.get("version") if isinstance(payload, dict) else None
        numbers = tuple(int(x) for x in re.findall(r"\d+", version or "")[:3])
        if len(numbers) == 3 and numbers < GUEST_FILES_SINCE:
            raise UnsupportedVCenter(
                f"vCenter {'.'.join(map(str, numbers))} ({version}) is older than 7.0U2: its REST API has no guest "
                f"file operations (they came with API 7.0.2.0) and VI/JSON needs 8.0U1; {OLD_VCENTER_ADVICE}")
        log.debug("vCenter %s", version)

    async def _find_host_source(self) -> None:
        """ESXi certificates (and management addresses) come from the vim25 API of the same vCenter: VI/JSON when it
        speaks it (8.0U1+), else SOAP (every vCenter); only when neither answers can HTTPS transfers be verified
        against ca_file alone (or not at all, insecure = true)."""
        if self._speaks_vi_json is None:
            self._speaks_vi_json = await speaks_vi_json(self.http)
        if self._speaks_vi_json:
            self._vi_class = ViJsonClient
        elif await speaks_soap(self.http):
            self._vi_class = SoapClient
        if self._vi_class is not None:
            self.hosts.reader = self._read_via_vi
            return
        if urlsplit(self.config.url).scheme == "https" and not self.config.ca_file and not self.config.insecure:
            raise UnsupportedVCenter(
                "the REST API cannot tell which certificate an ESXi host presents, and this vCenter answers neither "
                "VI/JSON nor SOAP to learn it from: set ca_file to the CA that signed the ESXi hosts' certificates "
                "(VMCA: vCenter's root CA, https://<vcenter>/certs/download.zip), or insecure = true (a lab only)")
        log.info("vCenter has no vim25 API to learn ESXi certificates from: transfers go to ESXi hosts by name, "
                 "verified against %s", self.config.ca_file or "nothing (insecure)")

    async def _read_via_vi(self, mo_type: str, mo_id: str, paths: Sequence[str]) -> dict[str, Any]:
        async with self._vi_lock:
            if self._vi is None:
                self._vi = self._vi_class(self.config, make_api_client(self.config))
            if not self._vi_started:
                await self._vi.start()  # a failure is tried again at the next lookup
                self._vi_started = True
        return await self._vi.read_properties(mo_type, mo_id, paths)

    async def aclose(self) -> None:
        try:
            if self._vi is not None:
                await self._vi.aclose()
        finally:
            await super().aclose()

    async def login(self) -> None:
        response = await send(self.http, "POST", "/api/session", "login",
                              auth=httpx.BasicAuth(self.config.username, self.config.password))
        if response.status_code == 404:
            raise UnsupportedVCenter(f"vCenter has no /api/session: it is older than 7.0 (its REST API lives under "
                                     f"/rest) and has no REST guest file operations; {OLD_VCENTER_ADVICE}")
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
    async def _vm_summaries(self) -> list:
        """GET /api/vcenter/vm, which refuses more than 4,000 matches (500 UNABLE_TO_ALLOCATE_RESOURCE) instead
        of paging: by name when the caller named its VMs, else the whole list, else host by host."""
        if self.config.vm_names:
            query = urlencode([("names", n) for n in self.config.vm_names])
            return expect(await self._request("GET", f"/api/vcenter/vm?{query}"), list, "VM list")
        try:
            return expect(await self._request("GET", "/api/vcenter/vm"), list, "VM list")
        except GuestFileError as e:
            if e.fault != "UNABLE_TO_ALLOCATE_RESOURCE":
                raise
        log.info("vCenter refuses to list all its VMs at once (more than it lists in one answer): listing them "
                 "host by host")
        advice = "name the VMs to mount with --vm NAME (or [mount] vms), which are then asked for by name"
        try:
            hosts = expect(await self._request("GET", "/api/vcenter/host"), list, "host list")
        except GuestFileError as e:
            raise VSphereError(f"vCenter refuses to list its VMs and its hosts ({e}); {advice}") from None
        listed, seen = [], set()
        for host in hosts:
            host_id = field(host, "host", str, "host summary")
            try:
                part = expect(await self._request("GET", f"/api/vcenter/vm?{urlencode({'hosts': host_id})}"), list,
                              "VM list")
            except GuestFileError as e:
                raise VSphereError(f"vCenter refuses to list the VMs of host {host_id} ({e}); {advice}") from None
            for summary in part:
                vm = field(summary, "vm", str, "VM summary")
                self.hosts.note_vm_host(vm, host_id)
                if vm not in seen:
                    seen.add(vm)
                    listed.append(summary)
        return listed

    async def list_vms(self) -> list[VMInfo]:
        listed = await self._vm_summaries()
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
        perms = field(posix, "permissions", (str, int), what, default=None)
        try:
            # "644", "0644" or the whole st_mode "100644": octal digits, the last four are chmod's
            permissions = int(str(perms), 8) & 0o7777 if perms is not None else None
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

    def list_dir(self, vm: str, creds: GuestCredentials, path: str) -> AsyncIterator[GuestFileInfo]:
        async def page(index: int) -> tuple[list[GuestFileInfo], int]:
            got = await self._guest("POST", vm, creds, self._fs(vm, "/files?action=list"), path, path=path,
                                    iteration={"size": self.config.list_page_size, "index": index})
            entries = [as_link(self._info(e, field(e, "filename", str, "file list entry")))
                       for e in field(got, "files", list, "file list", default=[])]
            if field(got, "status", str, "file list", default="END_OF_DATA") != "READY":
                return entries, 0
            total, end = got.get("total"), got.get("end_index")
            more = total - end - 1 if isinstance(total, int) and isinstance(end, int) else 1
            return entries, max(1, more)

        return paged_listing(page, self.config.list_page_size, f"{path} on {vm}")

    async def stat(self, vm: str, creds: GuestCredentials, path: str) -> GuestFileInfo:
        url = self._fs(vm, f"/files/{quote(path, safe='')}?action=get")
        return as_link(self._info(await self._guest("POST", vm, creds, url, path), basename(path)))

    async def _initiate(self, vm: str, creds: GuestCredentials, path: str, spec: dict):
        url = await self._guest("POST", vm, creds, self._fs(vm, "?action=create"), path, spec=spec)
        return await self.route(vm, expect(url, str, "transfer URL"))

    async def open_read(self, vm: str, creds: GuestCredentials, path: str) -> ReadTransfer:
        async def new_route():
            return await self._initiate(vm, creds, path, {"path": path})

        return HttpReadTransfer(self.transfers, await new_route(), new_route, None, None, f"{path} on {vm}")

    def _attributes(self, vm: str, attrs: FileAttributes | None) -> dict:
        out: dict = {}
        if attrs is None:
            return out
        if attrs.mtime is not None:
            out["last_modified"] = format_time(attrs.mtime, millis=True)
        if attrs.atime is not None:
            out["last_accessed"] = format_time(attrs.atime, millis=True)
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

        async def new_route():
            return await self._initiate(vm, creds, path, spec)

        await put_file(self.transfers, await new_route(), new_route, source, size, progress, f"{path} on {vm}")

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
