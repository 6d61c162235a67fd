"""The simulator's SOAP codec (guestfs_mount/sim/soapxml.py) against pyVmomi, without a server: requests as pyVmomi
serialises them decode to the VI/JSON shapes, and replies and faults as we encode them decode in pyVmomi."""

import datetime

import pytest

pytest.importorskip("pyVmomi")

from pyVmomi import SoapStubAdapter, vim, vmodl  # noqa: E402
from pyVmomi.SoapAdapter import SoapResponseDeserializer  # noqa: E402

from guestfs_mount.sim import soapxml  # noqa: E402
from guestfs_mount.sim.faults import REST_ERRORS, SimFault  # noqa: E402

STUB = SoapStubAdapter(host="localhost", version="vim.version.v8_0_3_0")  # never connects: only (de)serialises
UTC = datetime.timezone.utc


def moref(mo_type, value):
    return {"_typeName": "ManagedObjectReference", "type": mo_type, "value": value}


def request(mo, method: str, *args) -> bytes:
    info = next(m for m in mo._GetMethodList() if m.wsdlName == method)
    return STUB.SerializeRequest(mo, info, args)


def reply(method_info, data: bytes):
    return SoapResponseDeserializer(STUB).Deserialize(data, method_info.result)


FM = vim.vm.guest.FileManager("guestOperationsFileManager", STUB)
VM = vim.VirtualMachine("vm-7", STUB)
AUTH = vim.vm.guest.NamePasswordAuthentication(username="root", password="p<&>'\"", interactiveSession=False)
AUTH_DICT = {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": "root", "password": "p<&>'\""}
GUEST = {"vm": moref("VirtualMachine", "vm-7"), "auth": AUTH_DICT}


# ---------------------------------------------------------------- requests, as pyVmomi sends them


def test_guest_requests_decode_to_vi_json_shapes():
    when = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    attrs = vim.vm.guest.FileManager.PosixFileAttributes(permissions=0o644, ownerId=1000, modificationTime=when)
    cases = [
        (("ListFilesInGuest", VM, AUTH, "/etc", 5, 200, "^host"),
         {**GUEST, "filePath": "/etc", "index": 5, "maxResults": 200, "matchPattern": "^host"}),
        (("ListFilesInGuest", VM, AUTH, "/etc"), {**GUEST, "filePath": "/etc"}),
        (("InitiateFileTransferFromGuest", VM, AUTH, "/a b"), {**GUEST, "guestFilePath": "/a b"}),
        (("InitiateFileTransferToGuest", VM, AUTH, "/x", attrs, 2**40, True),
         {**GUEST, "guestFilePath": "/x", "fileSize": 2**40, "overwrite": True,
          "fileAttributes": {"_typeName": "GuestPosixFileAttributes", "modificationTime": "2024-05-01T10:00:00Z",
                             "ownerId": 1000, "permissions": 0o644}}),
        (("MakeDirectoryInGuest", VM, AUTH, "/d/e", True), {**GUEST, "directoryPath": "/d/e", "createParentDirectories": True}),
        (("DeleteFileInGuest", VM, AUTH, "/x"), {**GUEST, "filePath": "/x"}),
        (("DeleteDirectoryInGuest", VM, AUTH, "/d", False), {**GUEST, "directoryPath": "/d", "recursive": False}),
        (("MoveFileInGuest", VM, AUTH, "/x", "/y", False), {**GUEST, "srcFilePath": "/x", "dstFilePath": "/y", "overwrite": False}),
        (("MoveDirectoryInGuest", VM, AUTH, "/d", "/e"), {**GUEST, "srcDirectoryPath": "/d", "dstDirectoryPath": "/e"}),
        (("ChangeFileAttributesInGuest", VM, AUTH, "/x", vim.vm.guest.FileManager.WindowsFileAttributes(hidden=True)),
         {**GUEST, "guestFilePath": "/x", "fileAttributes": {"_typeName": "GuestWindowsFileAttributes", "hidden": True}}),
        (("CreateTemporaryFileInGuest", VM, AUTH, "p", "s", None), {**GUEST, "prefix": "p", "suffix": "s"}),
        (("CreateTemporaryDirectoryInGuest", VM, AUTH, "p", "", "/tmp"), {**GUEST, "prefix": "p", "suffix": "", "directoryPath": "/tmp"}),
    ]
    for (method, *args), expected in cases:
        call = soapxml.parse_request(request(FM, method, *args))
        assert call.method == method
        assert call.this == moref("GuestFileManager", "guestOperationsFileManager")
        assert call.params == expected, method


def test_property_collector_request_decodes_with_nested_specs():
    pc = vmodl.query.PropertyCollector("propertyCollector", STUB)
    view = vim.view.ContainerView("session[1]2", STUB)
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[
            vmodl.query.PropertyCollector.TraversalSpec(name="t", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "runtime.host"])],
    )
    call = soapxml.parse_request(request(pc, "RetrievePropertiesEx", [spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=2)))
    assert call.params == {
        "specSet": [{
            "_typeName": "PropertyFilterSpec",
            "propSet": [{"_typeName": "PropertySpec", "type": "VirtualMachine", "pathSet": ["name", "runtime.host"]}],
            "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("ContainerView", "session[1]2"), "skip": True,
                           "selectSet": [{"_typeName": "TraversalSpec", "name": "t", "type": "ContainerView", "path": "view", "skip": False}]}],
        }],
        "options": {"_typeName": "RetrieveOptions", "maxObjects": 2},
    }
    vmgr = vim.view.ViewManager("ViewManager", STUB)
    call = soapxml.parse_request(request(vmgr, "CreateContainerView", vim.Folder("group-d1", STUB), [vim.VirtualMachine], True))
    assert call.params == {"container": moref("Folder", "group-d1"), "type": ["VirtualMachine"], "recursive": True}
    sm = vim.SessionManager("SessionManager", STUB)
    assert soapxml.parse_request(request(sm, "Login", "u", "p&", None)).params == {"userName": "u", "password": "p&"}


# ---------------------------------------------------------------- replies, as pyVmomi reads them


def test_listing_reply_decodes_in_pyvmomi():
    result = {
        "_typeName": "GuestListFileInfo",
        "remaining": 3,
        "files": [
            {"_typeName": "GuestFileInfo", "path": "a&b<c>", "type": "file", "size": 2**40,
             "attributes": {"_typeName": "GuestPosixFileAttributes", "modificationTime": "2024-05-01T10:00:00Z",
                            "accessTime": "2024-05-02T08:00:00Z", "ownerId": 0, "groupId": 4, "permissions": 0o100644}},
            {"_typeName": "GuestFileInfo", "path": "bad\udcffname\x01", "type": "symlink", "size": 0,
             "attributes": {"_typeName": "GuestPosixFileAttributes", "symlinkTarget": "/etc", "permissions": 0o120777}},
            {"_typeName": "GuestFileInfo", "path": "w", "type": "directory", "size": 0,
             "attributes": {"_typeName": "GuestWindowsFileAttributes", "hidden": True, "readOnly": False,
                            "createTime": "2024-05-01T10:00:00Z"}},
        ],
    }
    data = soapxml.response("ListFilesInGuest", result, "GuestListFileInfo")
    assert b"<returnval><files><path>" in data  # declared types carry no xsi:type
    got = reply(FM._GetMethodInfo("ListFiles"), data)
    assert isinstance(got, vim.vm.guest.FileManager.ListFileInfo)
    assert got.remaining == 3
    a, link, w = got.files
    assert (a.path, a.type, a.size) == ("a&b<c>", "file", 2**40)
    assert isinstance(a.attributes, vim.vm.guest.FileManager.PosixFileAttributes)
    assert (a.attributes.permissions, a.attributes.groupId) == (0o100644, 4)
    assert a.attributes.modificationTime == datetime.datetime(2024, 5, 1, 10, 0, tzinfo=a.attributes.modificationTime.tzinfo)
    assert link.path == "bad\ufffdname\ufffd"  # not UTF-8 / not XML: U+FFFD, as the guest agent reports them
    assert link.attributes.symlinkTarget == "/etc"
    assert isinstance(w.attributes, vim.vm.guest.FileManager.WindowsFileAttributes) and w.attributes.hidden is True


def test_transfer_and_string_replies_decode_in_pyvmomi():
    info = {"_typeName": "FileTransferInformation", "size": 7, "url": "https://*:443/guestFile?id=1&token=ab",
            "attributes": {"_typeName": "GuestPosixFileAttributes", "permissions": 0o100600}}
    got = reply(FM._GetMethodInfo("InitiateFileTransferFromGuest"), soapxml.response("InitiateFileTransferFromGuest", info, "FileTransferInformation"))
    assert (got.size, got.url, got.attributes.permissions) == (7, "https://*:443/guestFile?id=1&token=ab", 0o100600)
    url = reply(FM._GetMethodInfo("InitiateFileTransferToGuest"), soapxml.response("InitiateFileTransferToGuest", "https://*/guestFile?id=2&token=c", "string"))
    assert url == "https://*/guestFile?id=2&token=c"
    assert reply(FM._GetMethodInfo("DeleteFile"), soapxml.response("DeleteFileInGuest", None, None)) is None


def test_property_values_of_every_box_decode_in_pyvmomi():
    pem = b"-----BEGIN CERTIFICATE-----\n\xff"
    objects = [{
        "_typeName": "ObjectContent",
        "obj": moref("HostSystem", "host-10"),
        "propSet": [
            {"_typeName": "DynamicProperty", "name": "name", "val": {"_typeName": "string", "_value": "esx<1>"}},
            {"_typeName": "DynamicProperty", "name": "config.certificate",
             "val": {"_typeName": "ArrayOfByte", "_value": [b - 256 if b > 127 else b for b in pem]}},
            {"_typeName": "DynamicProperty", "name": "runtime.powerState", "val": {"_typeName": "VirtualMachinePowerState", "_value": "poweredOff"}},
            {"_typeName": "DynamicProperty", "name": "guest.guestOperationsReady", "val": {"_typeName": "boolean", "_value": False}},
            {"_typeName": "DynamicProperty", "name": "runtime.host", "val": moref("HostSystem", "host-10")},
            {"_typeName": "DynamicProperty", "name": "vm", "val": {"_typeName": "ArrayOfManagedObjectReference", "_value": [moref("VirtualMachine", "vm-1")]}},
            {"_typeName": "DynamicProperty", "name": "runtime", "val": {"_typeName": "VirtualMachineRuntimeInfo", "powerState": "poweredOn", "connectionState": "connected"}},
        ],
    }]
    pc = vmodl.query.PropertyCollector("propertyCollector", STUB)
    data = soapxml.response("RetrievePropertiesEx", {"_typeName": "RetrieveResult", "token": "1", "objects": objects}, "RetrieveResult?")
    got = reply(pc._GetMethodInfo("RetrievePropertiesEx"), data)
    assert got.token == "1"
    (content,) = got.objects
    assert content.obj._moId == "host-10" and isinstance(content.obj, vim.HostSystem)
    vals = {p.name: p.val for p in content.propSet}
    assert vals["name"] == "esx<1>"
    assert bytes(b & 0xFF for b in vals["config.certificate"]) == pem
    assert vals["runtime.powerState"] == vim.VirtualMachine.PowerState.poweredOff
    assert vals["guest.guestOperationsReady"] is False
    assert isinstance(vals["runtime.host"], vim.HostSystem)
    assert [v._moId for v in vals["vm"]] == ["vm-1"]
    assert vals["runtime"].powerState == "poweredOn"
    many = reply(pc._GetMethodInfo("RetrieveContents"), soapxml.response("RetrieveProperties", objects * 2, "ObjectContent[]?"))
    assert len(many) == 2 and many[1].obj._moId == "host-10"


def test_values_of_types_outside_the_table_still_decode_in_pyvmomi():
    """What a shared handler adds (a host's management network, say) reaches SOAP callers without SOAP code."""
    net = {"_typeName": "ArrayOfVirtualNicManagerNetConfig", "_value": [{
        "_typeName": "VirtualNicManagerNetConfig", "nicType": "management", "multiSelectAllowed": True,
        "candidateVnic": [{"_typeName": "HostVirtualNic", "device": "vmk0", "key": "key-vim.host.VirtualNic-vmk0",
                           "portgroup": "Management Network",
                           "spec": {"_typeName": "HostVirtualNicSpec", "mtu": 1500,
                                    "ip": {"_typeName": "HostIpConfig", "dhcp": False, "ipAddress": "10.0.0.5",
                                           "subnetMask": "255.255.255.0"}}}],
        "selectedVnic": ["key-vim.host.VirtualNic-vmk0"],
    }]}
    content = {"_typeName": "ObjectContent", "obj": moref("HostSystem", "host-11"),
               "propSet": [{"_typeName": "DynamicProperty", "name": "config.virtualNicManagerInfo.netConfig", "val": net}]}
    pc = vmodl.query.PropertyCollector("propertyCollector", STUB)
    (got,) = reply(pc._GetMethodInfo("RetrieveContents"), soapxml.response("RetrieveProperties", [content], "ObjectContent[]?"))
    (config,) = got.propSet[0].val
    assert isinstance(config, vim.host.VirtualNicManager.NetConfig) and config.multiSelectAllowed is True
    (nic,) = config.candidateVnic
    assert (nic.device, nic.spec.mtu, nic.spec.ip.ipAddress, nic.spec.ip.dhcp) == ("vmk0", 1500, "10.0.0.5", False)
    assert list(config.selectedVnic) == ["key-vim.host.VirtualNic-vmk0"]


@pytest.mark.parametrize("name", sorted(set(REST_ERRORS) | {"InvalidRequest", "SystemError", "InvalidProperty"}))
def test_every_fault_decodes_as_its_vim_class(name):
    fields = {
        "InvalidPowerState": {"requestedState": "poweredOn", "existingState": "poweredOff"},
        "ManagedObjectNotFound": {"obj": moref("VirtualMachine", "vm-9")},
        "NotAuthenticated": {"privilegeId": "System.View"},
        "InvalidArgument": {"invalidProperty": "matchPattern"},
        "InvalidProperty": {"name": "foo"},
    }.get(name, {})
    fault = SimFault(name, f"it failed: <{name}> & more", file="/x" if name.startswith("File") else None, **fields)
    data = soapxml.fault(fault.vi_body(), fault.message)
    got = SoapResponseDeserializer(STUB).Deserialize(data, FM._GetMethodInfo("ListFiles").result)
    assert type(got).__name__.rsplit(".", 1)[-1] == name
    assert isinstance(got, vmodl.MethodFault)
    assert got.msg == f"it failed: <{name}> & more"
    assert got.faultMessage[0].message == fault.message
    for key, value in fields.items():
        got_value = getattr(got, key)
        if isinstance(value, dict):
            assert got_value._moId == value["value"]
        else:
            assert got_value == value
    if isinstance(got, vim.fault.FileFault):
        assert got.file == (fault.file or "")


# ---------------------------------------------------------------- bad requests


ENV = '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>'
THIS = '<_this type="GuestFileManager">guestOperationsFileManager</_this>'
VM_AUTH = ('<vm type="VirtualMachine">vm-1</vm><auth xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:type="NamePasswordAuthentication"><interactiveSession>false</interactiveSession>'
           "<username>root</username><password>x</password></auth>")


@pytest.mark.parametrize(
    "body, says",
    [
        ("not xml at all", "not well-formed"),
        (ENV.format("")[:60], "not well-formed"),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>' + ENV.format("&b;"), "DTD"),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + ENV.format("&e;"), "DTD"),
        ("<html><body>hi</body></html>", "expected a SOAP envelope"),
        (ENV.format(""), "empty"),
        (ENV.format('<Bogus xmlns="urn:vim25">' + THIS + "</Bogus>"), "Unable to resolve WSDL method name Bogus"),
        (ENV.format('<Logout xmlns="urn:other"><_this type="SessionManager">S</_this></Logout>'), "namespace"),
        (ENV.format('<Logout xmlns="urn:vim25"></Logout>'), "Required parameter _this is missing"),
        (ENV.format('<DeleteFileInGuest xmlns="urn:vim25">' + THIS + VM_AUTH + "</DeleteFileInGuest>"), "Required parameter filePath is missing"),
        (ENV.format('<ListFilesInGuest xmlns="urn:vim25">' + THIS + VM_AUTH + "<filePath>/</filePath><index>x</index></ListFilesInGuest>"), "not an xsd:int"),
        (ENV.format('<ListFilesInGuest xmlns="urn:vim25">' + THIS + VM_AUTH + "<filePath>/</filePath><maxResults>99999999999</maxResults></ListFilesInGuest>"), "out of range"),
        (ENV.format('<DeleteDirectoryInGuest xmlns="urn:vim25">' + THIS + VM_AUTH + "<directoryPath>/</directoryPath><recursive>maybe</recursive></DeleteDirectoryInGuest>"), "not a boolean"),
        (ENV.format('<DeleteFileInGuest xmlns="urn:vim25">' + THIS + VM_AUTH + "<filePath>/</filePath><extra>1</extra></DeleteFileInGuest>"), "Unexpected element extra"),
        (ENV.format('<DeleteFileInGuest xmlns="urn:vim25">' + THIS + VM_AUTH.replace("<password>x</password>", "") + "<filePath>/</filePath></DeleteFileInGuest>"),
         "Required property password is missing"),
        (ENV.format('<DeleteFileInGuest xmlns="urn:vim25">' + THIS + VM_AUTH.replace("NamePasswordAuthentication", "GuestPosixFileAttributes") + "<filePath>/</filePath></DeleteFileInGuest>"),
         "is not a GuestAuthentication"),
        (ENV.format('<DeleteFileInGuest xmlns="urn:vim25">' + THIS + '<vm>vm-1</vm></DeleteFileInGuest>'), "needs a type attribute"),
    ],
)
def test_bad_request_is_a_request_error(body, says):
    with pytest.raises(soapxml.RequestError, match=says):
        soapxml.parse_request(body.encode())


def test_deeply_nested_specs_are_refused_not_recursed():
    spec = '<selectSet xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="TraversalSpec"><type>Folder</type><path>x</path>{}</selectSet>'
    inner = ""
    for _ in range(200):
        inner = spec.format(inner)
    body = ENV.format('<RetrieveProperties xmlns="urn:vim25"><_this type="PropertyCollector">p</_this><specSet><propSet><type>Folder</type></propSet>'
                      '<objectSet><obj type="Folder">f</obj>' + inner + "</objectSet></specSet></RetrieveProperties>")
    with pytest.raises(soapxml.RequestError, match="nested deeper"):
        soapxml.parse_request(body.encode())
