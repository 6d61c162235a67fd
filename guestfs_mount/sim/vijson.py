"""The VI/JSON dialect: `/sdk/vim25/{release}/{MoType}/{moId}/{method|property}`.

POST invokes a method, GET reads a top-level property. Faults are HTTP 500 with the fault object (API.md §1.3).
`invoke` and `get_property` are the vim25 model itself, shared with the SOAP encoding (soap.py).
"""

from __future__ import annotations

import itertools
import threading
from urllib.parse import unquote, urlsplit

from .faults import SimFault
from .hosts import Host, net_config
from .inventory import VM
from .state import VI_JSON_SINCE, Simulator, iso, release_ok
from .viguest import GUEST_METHODS
from .viprocs import PROCESS_METHODS

SESSION_HEADER = "vmware-api-session-id"

_views_lock = threading.Lock()
_views: dict[str, list[str]] = {}  # ContainerView moId -> the types it shows
_view_numbers = itertools.count(1)
_page_tokens = itertools.count(1)


def moref(mo_type: str, value: str) -> dict:
    return {"_typeName": "ManagedObjectReference", "type": mo_type, "value": value}


def box(type_name: str, value) -> dict:
    return {"_typeName": type_name, "_value": value}


def service_content(sim: Simulator) -> dict:
    p = sim.product
    return {
        "_typeName": "ServiceContent",
        "rootFolder": moref("Folder", p.root_folder),
        "propertyCollector": moref("PropertyCollector", p.property_collector),
        "viewManager": moref("ViewManager", p.view_manager),
        "sessionManager": moref("SessionManager", p.session_manager),
        "searchIndex": moref("SearchIndex", p.search_index),
        "guestOperationsManager": moref("GuestOperationsManager", p.guest_operations_manager),
        "about": p.about_of(sim.settings.vc_version),
    }


def user_session(s) -> dict:
    return {
        "_typeName": "UserSession",
        "key": s.key,
        "userName": s.user,
        "fullName": s.user,
        "loginTime": iso(s.created),
        "lastActiveTime": iso(s.last_active),
        "locale": "en",
        "messageLocale": "en",
        "extensionSession": False,
        "ipAddress": "127.0.0.1",
        "userAgent": "",
        "callCount": 0,
    }


# ---------------------------------------------------------------- routing


def handle(h, sim: Simulator) -> None:
    parts = [unquote(p) for p in urlsplit(h.path).path.split("/")[3:]]
    if len(parts) != 4 or not release_ok(parts[0]) or not sim.has(VI_JSON_SINCE):
        # (a vCenter before 8.0U1 has no VI/JSON endpoint at all)
        h.send_json(404, {"error": "unknown release or path"})
        return
    _, mo_type, mo_id, name = parts
    h.op = name
    token = h.headers.get(SESSION_HEADER)
    try:
        if h.command == "GET":
            result = get_property(sim, mo_type, mo_id, name, token)
            status = 200
        elif h.command == "POST":
            body = h.read_json()
            if not isinstance(body, dict):
                raise SimFault("InvalidArgument", "the request body must be an object")
            status, result, headers = invoke(h, sim, mo_type, mo_id, name, body, token)
            if headers:
                h.send_json(status, result, headers)
                return
        else:
            h.send_json(405, {"error": "GET or POST only"})
            return
    except SimFault as fault:
        h.send_json(500, fault.vi_body())
        return
    if result is None:
        h.send_empty(204)
        return
    # a session due a new id (/_sim/sessions/rotate) gets it with an answer that has a body, as govmomi reads it
    rotated = sim.sessions.take_rotation(token) if token else None
    h.send_json(status, result, {SESSION_HEADER: rotated} if rotated else None)


# ---------------------------------------------------------------- properties


def get_property(sim: Simulator, mo_type: str, mo_id: str, name: str, token):
    """A top-level property of a managed object (VI/JSON's GET, SOAP's Fetch); InvalidProperty when not served."""
    if (mo_type, name) == ("ServiceInstance", "content"):
        sim.begin("RetrieveServiceContent")
        return service_content(sim)
    sim.begin(name)
    if (mo_type, name) == ("SessionManager", "currentSession"):
        s = sim.sessions.get(token)
        return user_session(s) if s else None  # a dead session reads as unset (204), not as a fault
    sim.session(token)
    if (mo_type, name) == ("GuestOperationsManager", "fileManager"):
        return moref("GuestFileManager", sim.product.file_manager)
    if (mo_type, name) == ("GuestOperationsManager", "processManager"):
        return moref("GuestProcessManager", sim.product.process_manager)
    if (mo_type, name) == ("ContainerView", "view"):
        return _view_members(sim, mo_id)
    if mo_type == "VirtualMachine":
        vm = _vm(sim, mo_id)
        if name == "name":
            return vm.name
        if name in ("runtime", "guest", "config"):
            return _vm_property(sim, vm, name)
    if mo_type == "HostSystem" and name == "name":
        return _host(sim, mo_id).name
    if mo_type == "Datacenter" and mo_id == sim.product.datacenter and name == "name":
        return sim.product.datacenter_name
    raise SimFault("InvalidProperty", f"no property {name} on {mo_type}:{mo_id}", name=name)


def _vm(sim: Simulator, vm_id: str) -> VM:
    vm = sim.inventory.by_id(vm_id)
    if vm is None:
        raise SimFault(
            "ManagedObjectNotFound",
            f"The object 'vim.VirtualMachine:{vm_id}' has already been deleted or has not been completely created",
            obj=moref("VirtualMachine", vm_id),
        )
    return vm


def _host(sim: Simulator, host_id: str | None) -> Host:
    host = sim.hosts.by_id(host_id)
    if host is None:
        raise SimFault("ManagedObjectNotFound", f"The object 'vim.HostSystem:{host_id}' has already been deleted",
                       obj=moref("HostSystem", str(host_id)))
    return host


_MISSING = object()


def _vm_property(sim: Simulator, vm: VM, path: str):
    tools = "guestToolsRunning" if vm.guest_ops_ready else "guestToolsNotRunning"
    values = {
        "name": box("string", vm.name),
        "runtime.powerState": box("VirtualMachinePowerState", vm.power_state),
        "runtime.host": moref("HostSystem", vm.host),
        "runtime.connectionState": box("VirtualMachineConnectionState", "connected"),
        "guest.guestFamily": box("string", vm.guest_family),
        "guest.guestOperationsReady": box("boolean", vm.guest_ops_ready),
        "guest.interactiveGuestOperationsReady": box("boolean", False),
        "guest.toolsRunningStatus": box("string", tools),
        "config.template": box("boolean", vm.template),
        "config.name": box("string", vm.name),
        "config.guestId": box("string", "windows9Server64Guest" if vm.windows else "otherLinux64Guest"),
        "summary.runtime.powerState": box("VirtualMachinePowerState", vm.power_state),
    }
    if path == "runtime":
        return {
            "_typeName": "VirtualMachineRuntimeInfo",
            "host": moref("HostSystem", vm.host),
            "connectionState": "connected",
            "powerState": vm.power_state,
        }
    if path == "guest":
        return {
            "_typeName": "GuestInfo",
            "guestFamily": vm.guest_family,
            "toolsRunningStatus": tools,
            "guestOperationsReady": vm.guest_ops_ready,
            "interactiveGuestOperationsReady": False,
        }
    if path == "config":
        return {"_typeName": "VirtualMachineConfigInfo", "name": vm.name, "template": vm.template}
    return values.get(path, _MISSING)


def _host_property(sim: Simulator, host: Host, path: str):
    if path == "name":
        return box("string", host.name)
    if path == "runtime.connectionState":
        return box("HostSystemConnectionState", "connected")
    if path == "config.certificate" and host.cert_pem:
        # xsd:byte[] is an array of signed int8 (API.md §1.2 rule 6)
        return box("ArrayOfByte", [b - 256 if b > 127 else b for b in host.cert_pem.encode()])
    if path == "summary.config.sslThumbprint" and host.thumbprint:
        return box("string", host.thumbprint)
    if path == "config.virtualNicManagerInfo.netConfig":
        return box("ArrayOfVirtualNicManagerNetConfig", net_config(host))
    return _MISSING


def _named_property(name: str, path: str):
    return box("string", name) if path == "name" else _MISSING


# ---------------------------------------------------------------- methods


def invoke(h, sim: Simulator, mo_type: str, mo_id: str, name: str, body: dict, token):
    """Invoke method `name` on a managed object with the parameters in `body` (VI/JSON shapes).

    Returns (status, result or None for 204, extra headers: Login's new session token under SESSION_HEADER)."""
    if name == "RetrieveServiceContent":
        sim.begin(name)
        return 200, service_content(sim), None
    if name == "Login":
        sim.begin(name)
        if body.get("userName") != sim.settings.vc_user or body.get("password") != sim.settings.vc_password:
            raise SimFault("InvalidLogin", "Cannot complete login due to an incorrect user name or password.")
        s = sim.sessions.create(sim.settings.vc_user)
        return 200, user_session(s), {SESSION_HEADER: s.token}
    guest_method = GUEST_METHODS.get(name) or PROCESS_METHODS.get(name)
    if guest_method is not None:
        vm_ref = body.get("vm") or {}
        auth = body.get("auth") or {}
        vm, fs = sim.guest_call(name, token, vm_ref.get("value"), auth.get("username"), auth.get("password"))
        h.vm_name = vm.name
        status, result = guest_method(h, sim, vm, fs, body)
        return status, result, None
    sim.begin(name)
    session = sim.session(token)
    if name == "Logout":
        sim.sessions.drop(token)
        return 204, None, None
    if name == "CreateContainerView":
        types = body.get("type") or ["VirtualMachine"]
        with _views_lock:
            view_id = f"session[{session.key}]{next(_view_numbers):x}"
            _views[view_id] = list(types)
        return 200, moref("ContainerView", view_id), None
    if name == "DestroyView":
        with _views_lock:
            _views.pop(mo_id, None)
        return 204, None, None
    if name in ("RetrievePropertiesEx", "RetrieveProperties"):
        objects = _retrieve(sim, body.get("specSet") or [])
        if name == "RetrieveProperties":
            return 200, objects, None
        max_objects = (body.get("options") or {}).get("maxObjects") or 0
        return 200, _page(session, objects, max_objects), None
    if name == "ContinueRetrievePropertiesEx":
        rest = session.pending.pop(str(body.get("token")), None)
        if rest is None:
            raise SimFault("InvalidArgument", "unknown or spent token", invalidProperty="token")
        return 200, _page(session, rest[1], rest[0]), None
    if name == "CancelRetrievePropertiesEx":
        session.pending.pop(str(body.get("token")), None)
        return 204, None, None
    if name == "FindChild":
        return _found(_find_child(sim, (body.get("entity") or {}).get("value"), body.get("name")))
    if name == "FindByInventoryPath":
        return _found(_find_by_path(sim, body.get("inventoryPath") or ""))
    raise SimFault("InvalidRequest" if mo_type else "InvalidArgument", f"method {name} is not simulated")


def _found(ref):
    # An unset result is sent as 204 with no body, like any method with nothing to return.
    return (200, ref, None) if ref else (204, None, None)


def _find_child(sim: Simulator, entity: str | None, name: str | None):
    p = sim.product
    if entity == p.root_folder and name == p.datacenter_name:
        return moref("Datacenter", p.datacenter)
    if entity == p.datacenter and name == "vm":
        return moref("Folder", p.vm_folder)
    if entity == p.vm_folder and name:
        vm = sim.inventory.by_name(name)
        return moref("VirtualMachine", vm.id) if vm else None
    return None


def _find_by_path(sim: Simulator, path: str):
    parts = [p for p in path.split("/") if p]
    dc_name = sim.product.datacenter_name
    if len(parts) == 3 and parts[0] == dc_name and parts[1] == "vm":
        vm = sim.inventory.by_name(parts[2])
        return moref("VirtualMachine", vm.id) if vm else None
    if parts == [dc_name]:
        return moref("Datacenter", sim.product.datacenter)
    return None


def _page(session, objects: list, max_objects: int) -> dict:
    result = {"_typeName": "RetrieveResult", "objects": objects}
    if max_objects and len(objects) > max_objects:
        token = str(next(_page_tokens))
        session.pending[token] = (max_objects, objects[max_objects:])
        result = {"_typeName": "RetrieveResult", "token": token, "objects": objects[:max_objects]}
    return result


def _retrieve(sim: Simulator, spec_set: list) -> list:
    out = []
    for spec in spec_set:
        wanted = {p.get("type"): p for p in spec.get("propSet") or []}
        for ospec in spec.get("objectSet") or []:
            for ref in _objects(sim, ospec):
                pspec = wanted.get(ref["type"])
                if pspec is not None:
                    out.append(_object_content(sim, ref, pspec))
    return out


def _objects(sim: Simulator, ospec: dict) -> list[dict]:
    obj = ospec.get("obj") or {}
    refs = [] if ospec.get("skip") else [moref(obj.get("type"), obj.get("value"))]
    if obj.get("type") == "ContainerView" and any(s.get("path") == "view" for s in ospec.get("selectSet") or []):
        refs += _view_members(sim, obj.get("value"))
    if obj.get("type") == "VirtualMachine":
        _vm(sim, obj.get("value"))
    if obj.get("type") == "HostSystem" and not ospec.get("skip"):
        _host(sim, obj.get("value"))
    return refs


def _view_members(sim: Simulator, view_id) -> list[dict]:
    with _views_lock:
        types = _views.get(view_id)
    if types is None:
        raise SimFault("ManagedObjectNotFound", "the view is gone", obj=moref("ContainerView", view_id))
    refs = []
    if "VirtualMachine" in types:
        refs += [moref("VirtualMachine", vm.id) for vm in sim.inventory.list()]
    if "HostSystem" in types:
        refs += [moref("HostSystem", host.id) for host in sim.hosts.all]
    return refs


_ALL_VM_PATHS = ["name", "runtime.powerState", "runtime.host", "guest.guestFamily", "guest.guestOperationsReady", "config.template"]
_ALL_HOST_PATHS = ["name", "runtime.connectionState", "config.certificate", "summary.config.sslThumbprint",
                   "config.virtualNicManagerInfo.netConfig"]


def _object_content(sim: Simulator, ref: dict, pspec: dict) -> dict:
    kind = ref["type"]
    paths = pspec.get("pathSet") or []
    if pspec.get("all"):
        paths = _ALL_VM_PATHS if kind == "VirtualMachine" else _ALL_HOST_PATHS if kind == "HostSystem" else ["name"]
    props = []
    vm = sim.inventory.by_id(ref["value"]) if kind == "VirtualMachine" else None
    for path in paths:
        if kind == "VirtualMachine":
            val = _vm_property(sim, vm, path) if vm else _MISSING
        elif kind == "HostSystem":
            val = _host_property(sim, _host(sim, ref["value"]), path)
        elif kind == "Datacenter":
            val = _named_property(sim.product.datacenter_name, path)
        else:
            val = _MISSING
        if val is not _MISSING:  # unset or unknown properties are simply absent
            props.append({"_typeName": "DynamicProperty", "name": path, "val": val})
    return {"_typeName": "ObjectContent", "obj": ref, "propSet": props}
