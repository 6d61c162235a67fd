"""The Automation REST dialect (`/api/...`): session, VM list, guest identity/operations, guest filesystem.

Guest calls go through the same checks and guest file operations as VI/JSON and are counted under the VI
method names (docs/simulator.md has the table); faults become `{error_type, messages, data}` (API.md §2.8).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import SimFault
from .guestfs import Attributes, FileInfo, attributes_from
from .state import HELLO_SINCE, REST_GUEST_SINCE, Simulator, iso, release_ok, release_tuple

SESSION_HEADER = "vmware-api-session-id"
CHALLENGE = 'Basic realm="VCenter"'
POWER = {"poweredOn": "POWERED_ON", "poweredOff": "POWERED_OFF", "suspended": "SUSPENDED"}
FILE_TYPES = {"file": "FILE", "directory": "DIRECTORY", "symlink": "SYMLINK"}


class RestError(Exception):
    def __init__(self, status: int, error_type: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.extra = status, error_type, extra or {}

    def body(self) -> dict:
        return {
            "error_type": self.error_type,
            "messages": [{"id": f"com.vmware.sim.{self.error_type.lower()}", "default_message": str(self), "args": []}],
            **self.extra,
        }


def unauthenticated(message: str = "Authentication required.") -> RestError:
    return RestError(401, "UNAUTHENTICATED", message, {"challenge": CHALLENGE})


def handle(h, sim: Simulator) -> None:
    split = urlsplit(h.path)
    segments = split.path.split("/")[2:]  # drop "" and "api"; segments stay URL-encoded until routed
    action = (parse_qs(split.query).get("action") or [""])[0]
    try:
        status, result, headers = _route(h, sim, segments, parse_qs(split.query), action)
    except RestError as err:
        h.send_json(err.status, err.body())
        return
    except SimFault as fault:
        status, body = fault.rest_error()
        if status == 401:
            body["challenge"] = CHALLENGE
        h.send_json(status, body)
        return
    if result is None:
        h.send_empty(status, headers)
    else:
        h.send_json(status, result, headers)


def _route(h, sim: Simulator, seg: list[str], query: dict, action: str):
    token = h.headers.get(SESSION_HEADER)
    if seg == ["session"]:
        return _session(h, sim, token)
    if seg == ["vcenter", "system"] and h.command == "POST" and action == "hello" and sim.has(HELLO_SINCE):
        return _hello(h, sim)
    if seg == ["appliance", "system", "version"] and h.command == "GET":
        h.op = "appliance.system.version.get"
        sim.begin(h.op)
        _session_of(sim, token)
        return 200, _appliance_version(sim), None
    if seg == ["vcenter", "host"] and h.command == "GET":
        h.op = "vcenter.host.list"
        sim.begin(h.op)
        _session_of(sim, token)
        return 200, [{"host": host.id, "name": host.name, "connection_state": "CONNECTED",
                      "power_state": "POWERED_ON"} for host in sim.hosts.all], None
    if seg[:2] != ["vcenter", "vm"]:
        raise RestError(404, "NOT_FOUND", f"no such endpoint: {h.path}")
    if len(seg) == 2 and h.command == "GET":
        h.op = "vcenter.vm.list"
        sim.begin(h.op)
        _session_of(sim, token)
        return 200, _vm_list(sim, query), None
    vm_id = unquote(seg[2]) if len(seg) > 2 else ""
    rest = seg[3:]
    if rest[:2] in (["guest", "filesystem"], ["guest", "operations"]) and not sim.has(REST_GUEST_SINCE):
        # these operations came with vCenter 7.0U2 (API 7.0.2.0); an older /api has no route for them
        h.read_body()  # (not left on a kept-alive connection)
        raise RestError(404, "OPERATION_NOT_FOUND", f"no such operation: {split_path(h.path)}")
    if rest in (["guest", "identity"], ["guest", "operations"]) and h.command == "GET":
        h.op = f"vcenter.vm.guest.{rest[1]}.get"
        sim.begin(h.op)
        _session_of(sim, token)
        vm = sim.inventory.by_id(vm_id)
        if vm is None:
            raise RestError(404, "NOT_FOUND", f"VM {vm_id} not found")
        h.vm_name = vm.name
        if rest[1] == "operations":
            return 200, {"guest_operations_ready": vm.guest_ops_ready, "interactive_guest_operations_ready": False}, None
        if not vm.guest_ops_ready:
            raise RestError(503, "SERVICE_UNAVAILABLE", "VMware Tools is not running")
        return 200, _identity(vm), None
    if rest[:2] == ["guest", "processes"] and h.command == "POST":
        from .restprocs import processes

        return processes(h, sim, token, vm_id, rest[2:], action)
    if rest[:2] != ["guest", "filesystem"] or h.command != "POST":
        raise RestError(404, "NOT_FOUND", f"no such endpoint: {h.path}")
    return _filesystem(h, sim, token, vm_id, rest[2:], action)


# ---------------------------------------------------------------- session and VMs


def _session(h, sim: Simulator, token):
    if h.command == "POST":
        h.op = "Login"
        sim.begin(h.op)
        user, password = _basic_auth(h.headers.get("Authorization", ""))
        if user != sim.settings.vc_user or password != sim.settings.vc_password:
            raise unauthenticated("Authentication failed: wrong user name or password.")
        return 201, sim.sessions.create(sim.settings.vc_user).token, None
    if h.command == "GET":
        h.op = "currentSession"
        sim.begin(h.op)
        s = _session_of(sim, token)
        return 200, {"user": s.user, "created_time": iso(s.created), "last_accessed_time": iso(s.last_active)}, None
    if h.command == "DELETE":
        h.op = "Logout"
        sim.begin(h.op)
        _session_of(sim, token)
        sim.sessions.drop(token)
        return 204, None, None
    raise RestError(404, "NOT_FOUND", "no such operation on /api/session")


def _hello(h, sim: Simulator):
    """Release negotiation (8.0U2+): the newest of the client's releases this server speaks, or "" if none."""
    h.op = "hello"
    sim.begin(h.op)
    body = h.read_json()
    offered = body.get("api_releases") if isinstance(body, dict) else None
    if not isinstance(offered, list):
        raise RestError(400, "INVALID_ARGUMENT", "api_releases must be a list")
    server = release_tuple(sim.settings.vc_version + ".0")[:4]
    spoken = [r for r in offered if isinstance(r, str) and release_ok(r) and release_tuple(r) <= server]
    return 200, {"api_release": max(spoken, key=release_tuple, default="")}, None


def _appliance_version(sim: Simulator) -> dict:
    """GET /api/appliance/system/version (VersionStruct): `version` in the appliance's 4-part form."""
    parts = (sim.settings.vc_version.split(".") + ["0", "0", "0"])[:3]
    return {"version": ".".join(parts) + ".00000", "product": "VMware vCenter Server", "build": "0",
            "type": "vCenter Server with an embedded Platform Services Controller", "summary": "",
            "releasedate": "", "install_time": "2024-01-01T00:00:00.000Z"}


def split_path(path: str) -> str:
    return urlsplit(path).path


def _basic_auth(header: str) -> tuple[str | None, str | None]:
    if not header.lower().startswith("basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return user, password


def _session_of(sim: Simulator, token):
    s = sim.sessions.get(token)
    if s is None:
        raise unauthenticated()
    return s


def _vm_list(sim: Simulator, query: dict) -> list:
    names = set(query.get("names", []))
    ids = set(query.get("vms", []))
    states = set(query.get("power_states", []))
    hosts = set(query.get("hosts", []))
    folders = set(query.get("folders", []))
    bad = states - set(POWER.values())
    if bad:
        raise RestError(400, "INVALID_ARGUMENT", f"bad power state: {sorted(bad)}")
    out = []
    for vm in sim.inventory.list():
        if (names and vm.name not in names) or (ids and vm.id not in ids) or (states and POWER[vm.power_state] not in states):
            continue
        if (hosts and vm.host not in hosts) or (folders and VM_FOLDER not in folders):
            continue
        out.append({"vm": vm.id, "name": vm.name, "power_state": POWER[vm.power_state], "cpu_count": 1, "memory_size_MiB": 1024})
    if len(out) > sim.settings.rest_vm_limit:
        # a real vCenter refuses more than 4,000 matches instead of paging (--rest-vm-limit lowers it)
        raise RestError(500, "UNABLE_TO_ALLOCATE_RESOURCE",
                        f"More than {sim.settings.rest_vm_limit} virtual machines match the filter")
    return out


VM_FOLDER = "group-v3"  # the one VM folder (the VI inventory's)


def _identity(vm) -> dict:
    family, label = ("WINDOWS", "Microsoft Windows Server") if vm.windows else ("LINUX", "Other Linux (64-bit)")
    return {
        "name": "WINDOWS_9_SERVER_64" if vm.windows else "OTHER_LINUX_64",
        "family": family,
        "full_name": {"id": "vmsg.guestos.label", "default_message": label, "args": []},
        "host_name": vm.name,
        "ip_address": "127.0.0.1",
    }


# ---------------------------------------------------------------- guest filesystem

def _filesystem(h, sim: Simulator, token, vm_id: str, sub: list[str], action: str):
    body = h.read_json()
    if not isinstance(body, dict):
        raise RestError(400, "INVALID_ARGUMENT", "the request body must be an object")
    key = sub[0] if sub else ""
    path_arg = None
    if key == "files" and len(sub) > 1:
        path_arg = unquote("/".join(sub[1:]))  # `{path}` may arrive with `/` encoded as %2F or not
        key = "files/{path}"
    entry = ROUTES.get((key, action))
    if entry is None:
        raise RestError(404, "NOT_FOUND", f"no such operation: {key}?action={action}")
    operation, func = entry
    if operation == "Initiate":
        operation = "InitiateFileTransferToGuest" if (body.get("spec") or {}).get("attributes") else "InitiateFileTransferFromGuest"
    vm, fs = guest_login(h, sim, token, vm_id, operation, body)
    return func(h, sim, vm, fs, body, path_arg)


def guest_login(h, sim: Simulator, token, vm_id: str, operation: str, body: dict):
    """The checks of a guest call (counted as `operation`) with the body's `credentials`: (VM, its GuestFS)."""
    h.op = operation
    creds = body.get("credentials") or {}
    if creds.get("type", "USERNAME_PASSWORD") != "USERNAME_PASSWORD":
        user = password = None  # the simulator knows no SAML tokens
    else:
        user, password = creds.get("user_name"), creds.get("password")
    # a REST download needs GuestOperations.Modify, where VI's InitiateFileTransferFromGuest needs only Query
    privilege = "Modify" if operation == "InitiateFileTransferFromGuest" else None
    try:
        vm, fs = sim.guest_call(operation, token, vm_id, user, password, privilege=privilege)
    except SimFault as fault:
        if fault.name == "NotAuthenticated":
            raise unauthenticated() from None
        raise
    h.vm_name = vm.name
    return vm, fs


def _summary(e: FileInfo) -> dict:
    return {"filename": e.name, "type": FILE_TYPES[e.type], "size": e.size}


def _list(h, sim, vm, fs, body, _):
    path = body.get("path")
    h.guest_path = path or ""
    iteration = body.get("iteration") or {}
    size = iteration.get("size")
    size = 50 if size is None else int(size)
    index = int(iteration.get("index") or 0)
    pattern = (body.get("filter") or {}).get("match_pattern")
    info = fs.stat(path)
    if info.type != "directory":
        raise SimFault("NotADirectory", f"{path} is not a directory", file=path)
    # `.` and `..` are dropped here: REST clients get real entries only (docs/simulator.md)
    listed = fs.list_page(path, pattern, index, size, dots=False, skip_unreadable=sim.settings.skip_unreadable)
    covered = max(0, listed.total - index - listed.remaining)  # positions this page went over, skipped ones too
    result = {
        "files": [_summary(e) for e in listed.entries],
        "total": listed.total,
        "status": "READY" if listed.remaining > 0 else "END_OF_DATA",
    }
    if covered:
        result["start_index"] = index
        result["end_index"] = index + covered - 1
    return 200, result, None


def _get(h, sim, vm, fs, body, path):
    h.guest_path = path
    e = fs.stat(path)
    attrs = {
        "last_modified": iso_ms(e.mtime),
        "last_accessed": iso_ms(e.atime),
        "filesystem_family": "WINDOWS" if vm.windows else "POSIX",
    }
    if e.symlink_target is not None:
        attrs["symlink_target"] = e.symlink_target
    if vm.windows:
        attrs["win_attributes"] = {
            "hidden": path.rsplit("\\", 1)[-1].startswith("."),
            "read_only": not e.mode & 0o200,
            "created": iso_ms(e.ctime),
        }
    else:
        attrs["posix_attributes"] = {"owner": e.uid, "group": e.gid,
                                     "permissions": _permissions(e.mode, sim.settings.rest_permissions)}
    return 200, {"type": FILE_TYPES[e.type], "size": e.size, "attributes": attrs}, None


def iso_ms(ts: float) -> str:
    """vAPI's canonical DateTime: whole seconds from the agent, printed with milliseconds."""
    return iso(ts).replace("Z", ".000Z")


def _permissions(mode: int, form: str) -> str:
    """REST `permissions` (octal, exact form unconfirmed): "644" by default, "0644" or st_mode "100644"."""
    if form == "100644":
        return format(mode, "o")
    return format(mode & 0o7777, "04o" if form == "0644" else "o")


def _delete_file(h, sim, vm, fs, body, path):
    h.guest_path = path
    fs.delete_file(path)
    return 204, None, None


def _move_file(h, sim, vm, fs, body, _):
    h.guest_path = f"{body.get('path')} -> {body.get('new_path')}"
    fs.move_file(body.get("path"), body.get("new_path"), bool(body.get("overwrite")))
    return 204, None, None


def _rest_attributes(spec: dict, windows: bool) -> Attributes:
    """File attributes from a REST request (posix permissions are an octal string, chmod form)."""
    posix, win = spec.get("posix"), spec.get("windows")
    if (posix and windows) or (win and not windows):
        raise SimFault("InvalidArgument", "attributes of the other guest family", invalidProperty="attributes")
    return attributes_from({**spec, **(posix or {}), **(win or {})}, REST_ATTRIBUTE_NAMES, lambda v: int(str(v), 8))


REST_ATTRIBUTE_NAMES = {
    "mode": "permissions",
    "uid": "owner_id",
    "gid": "group_id",
    "mtime": "last_modified",
    "atime": "last_accessed",
    "hidden": "hidden",
    "read_only": "read_only",
}


def _update(h, sim, vm, fs, body, _):
    h.guest_path = body.get("path") or ""
    fs.change_attributes(body.get("path"), _rest_attributes(body.get("file_attributes") or {}, vm.windows))
    return 204, None, None


def _temp(is_dir: bool):
    def create(h, sim, vm, fs, body, _):
        return 200, fs.create_temporary(body.get("prefix"), body.get("suffix"), body.get("parent_path"), is_dir), None

    return create


def _mkdir(h, sim, vm, fs, body, _):
    h.guest_path = body.get("path") or ""
    fs.make_directory(body.get("path"), bool(body.get("create_parents")))
    return 204, None, None


def _rmdir(h, sim, vm, fs, body, _):
    h.guest_path = body.get("path") or ""
    fs.delete_directory(body.get("path"), bool(body.get("recursive")))
    return 204, None, None


def _move_dir(h, sim, vm, fs, body, _):
    h.guest_path = f"{body.get('path')} -> {body.get('new_path')}"
    fs.move_directory(body.get("path"), body.get("new_path"))
    return 204, None, None


def _transfer(h, sim, vm, fs, body, _):
    spec = body.get("spec") or {}
    path = spec.get("path")
    h.guest_path = path or ""
    attributes = spec.get("attributes")
    if not attributes:
        host, info = fs.file_for_download(path)
        t = sim.transfers.create(vm=vm.name, direction="get", host_path=host, guest_path=path)
    else:
        size = attributes.get("size")
        if not isinstance(size, int) or size < 0:
            raise SimFault("InvalidArgument", "attributes.size must be a non-negative integer", invalidProperty="size")
        overwrite = bool(attributes.get("overwrite"))
        attrs = _rest_attributes(attributes, vm.windows)
        host = fs.target_for_upload(path, overwrite)
        t = sim.transfers.create(
            vm=vm.name, direction="put", host_path=host, guest_path=path, size=size, attrs=attrs, overwrite=overwrite
        )
    return 201, sim.transfer_url(t.id, t.token), None


# (sub-path, action) -> (the VI method name it counts as, handler); "Initiate" picks From/To by the body
ROUTES = {
    ("", "create"): ("Initiate", _transfer),
    ("files", "list"): ("ListFilesInGuest", _list),
    ("files/{path}", "get"): ("ListFilesInGuest", _get),
    ("files/{path}", "delete"): ("DeleteFileInGuest", _delete_file),
    ("files", "move"): ("MoveFileInGuest", _move_file),
    ("files", "update"): ("ChangeFileAttributesInGuest", _update),
    ("files", "createTemporary"): ("CreateTemporaryFileInGuest", _temp(False)),
    ("directories", "create"): ("MakeDirectoryInGuest", _mkdir),
    ("directories", "delete"): ("DeleteDirectoryInGuest", _rmdir),
    ("directories", "move"): ("MoveDirectoryInGuest", _move_dir),
    ("directories", "createTemporary"): ("CreateTemporaryDirectoryInGuest", _temp(True)),
}
