"""The VI/JSON dialect (`/sdk/vim25/{release}/...`, vCenter 8.0U1+): GuestFileManager methods, one paged
ListFilesInGuest per directory with every attribute, FileTransferInformation on reads, and the PropertyCollector
reads that tell `hosts.EsxiHosts` where a VM runs and which certificate its host has (API.md §1)."""

from __future__ import annotations

import errno
import logging
from typing import Any, AsyncIterator, Sequence

import httpx

from guestfs_mount.vsphere.base import DialectClient, as_link, basename, format_time, paged_listing, parse_time
from guestfs_mount.vsphere.faultmap import vi_fault_error
from guestfs_mount.vsphere.faults import GuestFileError, ProtocolError, UnsupportedVCenter
from guestfs_mount.vsphere.guestfiles import ClientConfig, ReadTransfer
from guestfs_mount.vsphere.http import connection_error, decode_json, expect, field, send
from guestfs_mount.vsphere.model import (FileAttributes, FileType, GuestCredentials, GuestFileInfo, GuestProcess,
                                       GuestProgram, VMInfo)
from guestfs_mount.vsphere.transfer import HttpReadTransfer, put_file

log = logging.getLogger(__name__)

RELEASE = "8.0.1.0"  # the oldest release with VI/JSON; every later vCenter accepts it
SESSION_HEADER = "vmware-api-session-id"
VM_PROPERTIES = ["name", "runtime.powerState", "runtime.host", "guest.guestFamily", "guest.guestOperationsReady",
                 "config.template"]
FILE_TYPES = {"file": FileType.FILE, "directory": FileType.DIRECTORY, "symlink": FileType.SYMLINK}


async def speaks_vi_json(http: httpx.AsyncClient) -> bool:
    """VI/JSON exists when ServiceInstance content answers with a ServiceContent (vCenter 8.0U1+)."""
    try:
        response = await http.get(f"/sdk/vim25/{RELEASE}/ServiceInstance/ServiceInstance/content")
    except httpx.HTTPError as e:
        raise connection_error(e, "contacting vCenter") from None
    if response.status_code != 200:
        return False
    try:
        return response.json().get("_typeName") == "ServiceContent"
    except (ValueError, AttributeError):
        return False


def moref(mo_type: str, value: str) -> dict:
    return {"_typeName": "ManagedObjectReference", "type": mo_type, "value": value}


def unbox(value: Any) -> Any:
    """`{"_typeName": "string", "_value": x}` -> x, recursively (API.md §1.2 rule 4)."""
    if isinstance(value, dict):
        if set(value) == {"_typeName", "_value"}:
            return unbox(value["_value"])
        return {k: unbox(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unbox(v) for v in value]
    return value


class ViJsonClient(DialectClient):
    dialect = "vi-json"

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient, release: str = RELEASE):
        super().__init__(config, http)
        self.base = f"/sdk/vim25/{release}"
        self._content: dict = {}
        self._file_manager = ""
        self._process_manager = ""  # asked for at the first guest program
        self._vm_windows: dict[str, bool] = {}
        self.hosts.reader = self.read_properties

    # ------------------------------------------------------------------------------------- plumbing
    async def _request(self, http_method: str, mo_type: str, mo_id: str, name: str, body: dict | None = None, *,
                       path: str | None = None, vm: str | None = None, session: bool = True) -> Any:
        url = f"{self.base}/{mo_type}/{mo_id}/{name}"
        for attempt in (0, 1):
            token = self._token
            headers = self.session_headers() if session else {}
            kwargs = {"json": body if body is not None else {}} if http_method == "POST" else {}
            response = await send(self.http, http_method, url, name, headers=headers, **kwargs)
            if response.status_code == 204:
                return None
            if response.status_code == 200:
                self._adopt_session(response)
                return unbox(decode_json(response, name))
            payload = decode_json(response, name) if response.status_code == 500 else None
            if isinstance(payload, dict) and isinstance(payload.get("_typeName"), str):
                error = vi_fault_error(payload, path=path, vm=vm)
                if getattr(error, "fault", None) == "NotAuthenticated" and session and attempt == 0:
                    await self.relogin(token)
                    continue
                raise error
            if response.status_code in (401, 403) and session and attempt == 0:
                await self.relogin(token)
                continue
            raise ProtocolError(f"{name}: unexpected HTTP {response.status_code} from vCenter")
        raise AssertionError("unreachable")

    async def _invoke(self, mo_type: str, mo_id: str, method: str, body: dict | None = None, **kw) -> Any:
        return await self._request("POST", mo_type, mo_id, method, body, **kw)

    async def _guest(self, method: str, vm: str, creds: GuestCredentials, path: str, *,
                     manager: tuple[str, str] | None = None, **body) -> Any:
        """A guest call on the GuestFileManager (or `manager`, (type, moId)); `path` names the file in errors."""
        mo_type, mo_id = manager or ("GuestFileManager", self._file_manager)
        full = {"vm": moref("VirtualMachine", vm), "auth": guest_auth(creds), **body}
        return await self.guest_call(
            vm, f"{method} {path}", lambda: self._invoke(mo_type, mo_id, method, full, path=path, vm=vm))

    # ------------------------------------------------------------------------------------- session
    async def start(self) -> None:
        self._content = expect(await self._service_content(), dict, "ServiceContent")
        await self.login()
        manager = self._mo("guestOperationsManager")
        fm = await self._request("GET", "GuestOperationsManager", manager, "fileManager")
        self._file_manager = field(fm, "value", str, "GuestOperationsManager.fileManager")

    async def _service_content(self) -> Any:
        """ServiceInstance's content (no session needed); a vCenter without VI/JSON is one clear line."""
        response = await send(self.http, "GET", f"{self.base}/ServiceInstance/ServiceInstance/content",
                              "RetrieveServiceContent")
        if response.status_code == 404:
            raise UnsupportedVCenter('this vCenter has no VI/JSON API (vCenter 8.0U1 and later have it): use '
                                     'api = "soap" (every vCenter and ESXi), "rest" (vCenter 7.0U2 and later) or '
                                     '"auto"')
        if response.status_code != 200:
            raise ProtocolError(f"RetrieveServiceContent: unexpected HTTP {response.status_code} from vCenter")
        return unbox(decode_json(response, "ServiceContent"))

    def _mo(self, name: str) -> str:
        return field(field(self._content, name, dict, "ServiceContent"), "value", str, f"ServiceContent.{name}")

    @property
    def about(self) -> dict[str, str]:
        """What the ServiceContent's AboutInfo says (read before the login, so known even when it fails)."""
        about = self._content.get("about")
        return {key: about[name] for key, name in (("product", "name"), ("version", "version"), ("build", "build"),
                                                   ("api_version", "apiVersion"))
                if isinstance(about, dict) and isinstance(about.get(name), str)}

    async def login(self) -> None:
        url = f"{self.base}/SessionManager/{self._mo('sessionManager')}/Login"
        body = {"userName": self.config.username, "password": self.config.password}
        response = await send(self.http, "POST", url, "Login", json=body)
        if response.status_code != 200:
            payload = decode_json(response, "Login")
            if isinstance(payload, dict) and isinstance(payload.get("_typeName"), str):
                raise vi_fault_error(payload)
            raise ProtocolError(f"Login: unexpected HTTP {response.status_code} from vCenter")
        token = response.headers.get(SESSION_HEADER)
        if not token:
            raise ProtocolError("Login: vCenter answered without a vmware-api-session-id header")
        self._token = token

    def _adopt_session(self, response: httpx.Response) -> None:
        """vCenter may hand out a new session id with any answer; it is the one to send from then on (govmomi's
        JSON client does the same)."""
        token = response.headers.get(SESSION_HEADER)
        if token and self._token and token != self._token:
            log.info("vCenter gave a new session id; using it")
            self._token = token

    async def logout(self) -> None:
        await self._invoke("SessionManager", self._mo("sessionManager"), "Logout")

    # ------------------------------------------------------------------------------------- inventory
    async def _retrieve(self, spec: dict) -> list[dict]:
        """RetrievePropertiesEx and its continuations -> every ObjectContent."""
        pc = self._mo("propertyCollector")
        result = await self._invoke("PropertyCollector", pc, "RetrievePropertiesEx",
                                    {"specSet": [spec], "options": {"_typeName": "RetrieveOptions", "maxObjects": 500}})
        objects: list[dict] = []
        while result:
            objects += field(result, "objects", list, "RetrieveResult", default=[])
            token = field(result, "token", str, "RetrieveResult", default=None)
            if not token:
                break
            result = await self._invoke("PropertyCollector", pc, "ContinueRetrievePropertiesEx", {"token": token})
        return objects

    async def list_vms(self) -> list[VMInfo]:
        view = await self._invoke("ViewManager", self._mo("viewManager"), "CreateContainerView", {
            "container": moref("Folder", self._mo("rootFolder")), "type": ["VirtualMachine"], "recursive": True})
        view_id = field(view, "value", str, "ContainerView")
        try:
            objects = await self._retrieve({
                "_typeName": "PropertyFilterSpec",
                "propSet": [{"_typeName": "PropertySpec", "type": "VirtualMachine", "all": False,
                             "pathSet": VM_PROPERTIES}],
                "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("ContainerView", view_id), "skip": True,
                               "selectSet": [{"_typeName": "TraversalSpec", "name": "traverseView",
                                              "type": "ContainerView", "path": "view", "skip": False}]}],
            })
        finally:
            try:
                await self._invoke("ContainerView", view_id, "DestroyView")
            except Exception as e:  # the view dies with the session anyway
                log.debug("DestroyView failed: %s", e)
        vms = []
        for obj in objects:
            vm_id = field(field(obj, "obj", dict, "ObjectContent"), "value", str, "ObjectContent.obj")
            props = {field(p, "name", str, "DynamicProperty"): p.get("val")
                     for p in field(obj, "propSet", list, "ObjectContent", default=[])}
            if props.get("config.template") is True:
                continue  # templates cannot run guest operations
            host = props.get("runtime.host")
            self.hosts.note_vm_host(vm_id, host.get("value") if isinstance(host, dict) else None)
            info = VMInfo(
                id=vm_id,
                name=expect(props.get("name"), str, f"name of {vm_id}"),
                power_state=expect(props.get("runtime.powerState", "poweredOff"), str, f"powerState of {vm_id}"),
                guest_family=props.get("guest.guestFamily") if isinstance(props.get("guest.guestFamily"), str) else None,
                tools_ready=props.get("guest.guestOperationsReady") is True,
                host=host.get("value") if isinstance(host, dict) else None,
            )
            self._vm_windows[vm_id] = info.is_windows
            vms.append(info)
        return vms

    async def read_properties(self, mo_type: str, mo_id: str, paths: Sequence[str]) -> dict[str, Any]:
        """Some properties of one managed object (the `hosts.PropertyReader` of this dialect); unset ones are
        absent."""
        objects = await self._retrieve({
            "_typeName": "PropertyFilterSpec",
            "propSet": [{"_typeName": "PropertySpec", "type": mo_type, "all": False, "pathSet": list(paths)}],
            "objectSet": [{"_typeName": "ObjectSpec", "obj": moref(mo_type, mo_id), "skip": False}],
        })
        props: dict[str, Any] = {}
        for obj in objects:
            for prop in field(obj, "propSet", list, "ObjectContent", default=[]):
                if isinstance(prop, dict) and isinstance(prop.get("name"), str):
                    props[prop["name"]] = prop.get("val")
        return props

    # ------------------------------------------------------------------------------------- files
    def _info(self, entry: Any, name: str | None = None) -> GuestFileInfo:
        what = "GuestFileInfo"
        path = field(entry, "path", str, what)
        kind = FILE_TYPES.get(field(entry, "type", str, what))
        if kind is None:
            raise ProtocolError(f"unexpected answer from vCenter: file type {entry.get('type')!r}")
        attrs = field(entry, "attributes", dict, what, default={})
        mode = field(attrs, "permissions", int, what, default=None)
        return GuestFileInfo(
            name=name if name is not None else path,
            type=kind,
            size=field(entry, "size", int, what, default=0),
            permissions=mode & 0o7777 if mode is not None else None,
            uid=field(attrs, "ownerId", int, what, default=None),
            gid=field(attrs, "groupId", int, what, default=None),
            mtime=parse_time(attrs.get("modificationTime"), "modificationTime"),
            atime=parse_time(attrs.get("accessTime"), "accessTime"),
            symlink_target=field(attrs, "symlinkTarget", str, what, default=None),
        )

    def _record(self, entry: Any, name: str | None = None) -> GuestFileInfo:
        return as_link(self._info(entry, name))

    def list_dir(self, vm: str, creds: GuestCredentials, path: str) -> AsyncIterator[GuestFileInfo]:
        async def page(index: int) -> tuple[list[GuestFileInfo], int]:
            got = await self._guest("ListFilesInGuest", vm, creds, path, filePath=path, index=index,
                                    maxResults=self.config.list_page_size)
            files = field(got, "files", list, "GuestListFileInfo", default=[])
            # a non-directory path lists as itself, one entry with the full path (the guest agent's answer)
            if index == 0 and len(files) == 1 and files[0].get("path") == path and files[0].get("type") != "directory":
                raise GuestFileError(f"NotADirectory ({path})", errno=errno.ENOTDIR, fault="NotADirectory",
                                     path=path, vm=vm)
            return [self._record(e) for e in files], field(got, "remaining", int, "GuestListFileInfo", default=0)

        return paged_listing(page, self.config.list_page_size, f"{path} on {vm}")

    async def stat(self, vm: str, creds: GuestCredentials, path: str) -> GuestFileInfo:
        # a directory lists "." (itself) first; anything else comes back as the one entry
        page = await self._guest("ListFilesInGuest", vm, creds, path, filePath=path, maxResults=1)
        files = field(page, "files", list, "GuestListFileInfo", default=[])
        if not files:
            raise ProtocolError(f"ListFilesInGuest of {path} returned no entry")
        return self._record(files[0], name=basename(path))

    async def _initiate_read(self, vm: str, creds: GuestCredentials, path: str) -> dict:
        info = await self._guest("InitiateFileTransferFromGuest", vm, creds, path, guestFilePath=path)
        return expect(info, dict, "FileTransferInformation")

    async def open_read(self, vm: str, creds: GuestCredentials, path: str) -> ReadTransfer:
        fti = await self._initiate_read(vm, creds, path)
        route = await self.route(vm, field(fti, "url", str, "FileTransferInformation"))
        size = field(fti, "size", int, "FileTransferInformation")
        attrs = field(fti, "attributes", dict, "FileTransferInformation", default={})
        info = self._info({"path": path, "type": "file", "size": size, "attributes": attrs}, name=basename(path))

        async def new_route():
            again = await self._initiate_read(vm, creds, path)
            return await self.route(vm, field(again, "url", str, "FileTransferInformation"))

        return HttpReadTransfer(self.transfers, route, new_route, size, info, f"{path} on {vm}")

    def _attributes(self, vm: str, attrs: FileAttributes | None) -> dict:
        if self._vm_windows.get(vm):
            out: dict = {"_typeName": "GuestWindowsFileAttributes"}
        else:
            out = {"_typeName": "GuestPosixFileAttributes"}
            if attrs is not None:
                for key, value in (("permissions", attrs.permissions), ("ownerId", attrs.uid), ("groupId", attrs.gid)):
                    if value is not None:
                        out[key] = value
        if attrs is not None:
            if attrs.mtime is not None:
                out["modificationTime"] = format_time(attrs.mtime)
            if attrs.atime is not None:
                out["accessTime"] = format_time(attrs.atime)
        return out

    async def upload(self, vm, creds, path, source, size, attrs=None, overwrite=True, progress=None) -> None:
        async def new_route():
            url = await self._guest("InitiateFileTransferToGuest", vm, creds, path, guestFilePath=path,
                                    fileAttributes=self._attributes(vm, attrs), fileSize=size, overwrite=overwrite)
            return await self.route(vm, expect(url, str, "InitiateFileTransferToGuest result"))

        route = await new_route()
        await put_file(self.transfers, route, new_route, source, size, progress, f"{path} on {vm}")

    async def mkdir(self, vm, creds, path, parents=False) -> None:
        await self._guest("MakeDirectoryInGuest", vm, creds, path, directoryPath=path, createParentDirectories=parents)

    async def remove_file(self, vm, creds, path) -> None:
        await self._guest("DeleteFileInGuest", vm, creds, path, filePath=path)

    async def remove_dir(self, vm, creds, path, recursive=False) -> None:
        await self._guest("DeleteDirectoryInGuest", vm, creds, path, directoryPath=path, recursive=recursive)

    async def move_file(self, vm, creds, src, dst, overwrite=False) -> None:
        await self._guest("MoveFileInGuest", vm, creds, src, srcFilePath=src, dstFilePath=dst, overwrite=overwrite)

    async def move_dir(self, vm, creds, src, dst) -> None:
        await self._guest("MoveDirectoryInGuest", vm, creds, src, srcDirectoryPath=src, dstDirectoryPath=dst)

    async def set_attributes(self, vm, creds, path, attrs) -> None:
        await self._guest("ChangeFileAttributesInGuest", vm, creds, path, guestFilePath=path,
                          fileAttributes=self._attributes(vm, attrs))

    async def make_temp(self, vm, creds, prefix="", suffix="", directory=None, is_dir=False) -> str:
        method = "CreateTemporaryDirectoryInGuest" if is_dir else "CreateTemporaryFileInGuest"
        body = {"prefix": prefix, "suffix": suffix}
        if directory:
            body["directoryPath"] = directory
        result = await self._guest(method, vm, creds, directory or "(temp)", **body)
        return expect(result, str, f"{method} result")

    # ------------------------------------------------------------------------------------- programs
    async def _processes(self) -> tuple[str, str]:
        if not self._process_manager:
            pm = await self._request("GET", "GuestOperationsManager", self._mo("guestOperationsManager"),
                                     "processManager")
            self._process_manager = field(pm, "value", str, "GuestOperationsManager.processManager")
        return "GuestProcessManager", self._process_manager

    async def start_program(self, vm, creds, program: GuestProgram) -> int:
        spec: dict = {"_typeName": "GuestProgramSpec", "programPath": program.path, "arguments": program.arguments}
        if program.working_directory:
            spec["workingDirectory"] = program.working_directory
        if program.env is not None:
            spec["envVariables"] = [f"{name}={value}" for name, value in program.env.items()]
        pid = await self._guest("StartProgramInGuest", vm, creds, program.path, manager=await self._processes(),
                                spec=spec)
        return expect(pid, int, "StartProgramInGuest result")

    async def list_processes(self, vm, creds, pids) -> list[GuestProcess]:
        found = await self._guest("ListProcessesInGuest", vm, creds, f"processes {list(pids)}",
                                  manager=await self._processes(), pids=list(pids))
        return [GuestProcess(pid=field(p, "pid", int, "GuestProcessInfo"),
                             exit_code=field(p, "exitCode", int, "GuestProcessInfo", default=None),
                             end_time=parse_time(p.get("endTime"), "endTime"))
                for p in expect(found or [], list, "ListProcessesInGuest result")]


def guest_auth(creds: GuestCredentials) -> dict:
    if creds.saml_token:
        auth = {"_typeName": "SAMLTokenAuthentication", "interactiveSession": False, "token": creds.saml_token}
        if creds.username:
            auth["username"] = creds.username
        return auth
    return {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": creds.username,
            "password": creds.password or ""}
