"""The SOAP dialect's own checks: the client's requests against what pyVmomi serialises for the same calls, answers
as pyVmomi writes them decoded to VI/JSON's shapes, a standalone ESXi host, the session cookie, version discovery and
answers that make no sense. (Every GuestFiles behaviour runs on SOAP too in test_client.py and the mount suites.)"""

from __future__ import annotations

import datetime
import errno
import json
import ssl
import xml.etree.ElementTree as ET

import httpx
import pytest
import trio

from guestfs_mount.vsphere import soapcodec
from guestfs_mount.vsphere.faults import AuthenticationError, GuestFileError, ProtocolError
from guestfs_mount.vsphere.guestfiles import ClientConfig, open_client
from guestfs_mount.vsphere.model import FileAttributes, GuestCredentials, GuestProgram
from guestfs_mount.vsphere.soap import SoapClient, newest_common
from tests.helpers.badserver import Answer, bad_server
from tests.helpers.simulator import running_simulator
from tests.helpers.soapanswers import billion_laughs, envelope, fault

pytest.importorskip("pyVmomi")

from pyVmomi import SoapStubAdapter, VmomiSupport as V, vim, vmodl  # noqa: E402
from pyVmomi.SoapAdapter import Serialize, SerializeFaultDetail  # noqa: E402

VERSION = "vim.version.v8_0_3_0"
STUB = SoapStubAdapter(host="localhost", version=VERSION)  # never connects: it only serialises
CREDS = GuestCredentials("root", "vmware")
PC = vmodl.query.PropertyCollector


# ------------------------------------------------------------------------------------------- helpers
class Recorder(httpx.AsyncHTTPTransport):
    """The real transport, keeping the body of every SOAP request sent through it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent: list[bytes] = []

    async def handle_async_request(self, request):
        if request.method == "POST" and request.url.path == "/sdk":
            self.sent.append(request.content)
        return await super().handle_async_request(request)


def canonical(data: bytes):
    """An envelope as (tag, attributes, text, children), without pyVmomi's versionId attributes."""
    def walk(e):
        attrs = {k: v for k, v in e.attrib.items() if k != "versionId"}
        return (e.tag, attrs, (e.text or "") if len(e) == 0 else "", [walk(c) for c in e])
    return walk(ET.fromstring(data))


def pyvmomi_request(mo, method: str, *args) -> bytes:
    info = next(m for m in mo._GetMethodList() if m.wsdlName == method)
    return STUB.SerializeRequest(mo, info, args)


def pyvmomi_fetch(mo, prop: str) -> bytes:
    """A property read as pyVmomi sends it (StubAdapterAccessorImpl.InvokeAccessor: a Fetch)."""
    info = type(mo)._GetPropertyInfo(prop)
    fetch = V.Object(name=prop, type=V.ManagedObject, wsdlName="Fetch", version=info.version,
                     params=(V.Object(name="prop", type=str, version=VERSION, flags=0),), isTask=False,
                     resultFlags=info.flags, result=info.type, methodResult=info.type)
    return STUB.SerializeRequest(mo, fetch, (prop,))


def pyvmomi_answer(method: str, value, vmodl_type) -> bytes:
    """An answer whose <returnval> pyVmomi's own serialiser wrote."""
    info = V.Object(name="returnval", type=vmodl_type, version=VERSION, flags=0)
    return envelope(method, Serialize(value, info, VERSION, {"urn:vim25": ""}).decode())


def decode(data: bytes, method: str, this_type: str = "PropertyCollector", params=None, status: int = 200):
    return soapcodec.answer(data, method, soapcodec.result_slot(method, this_type, params), method, status, "text/xml")


# ------------------------------------------------------------------------------------------- requests vs pyVmomi
@pytest.fixture
def tls_sim(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    (root / "win").mkdir()
    (root / ".vms.json").write_text(json.dumps({"win": {"guestFamily": "windowsGuest"}}))
    # transfer URLs name an ESXi host, so the client reads that host's properties to pin its certificate
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True,
                           extra_args=["--hosts", "esx01.sim.invalid=127.0.0.11"]) as simulator:
        yield simulator


async def test_every_request_is_what_pyvmomi_sends_for_the_same_call(tls_sim, tmp_path):
    sim = tls_sim
    d = sim.root / "alpha/d"
    d.mkdir()
    for name in ("a", "b", "c", "e"):
        (d / name).write_text(name)
    (sim.root / "win/C").mkdir()
    (sim.root / "win/C/w.txt").write_text("w")
    src = tmp_path / "src"
    src.write_bytes(b"12345")
    config = ClientConfig(url=sim.url, username=sim.vc_user, password=sim.vc_password, api="soap",
                          ca_file=sim.ca_path, list_page_size=3)
    recorder = Recorder(verify=ssl.create_default_context(cafile=sim.ca_path))
    client = SoapClient(config, httpx.AsyncClient(base_url=sim.url, transport=recorder))
    await client.start()
    try:
        vms = {v.name: v.id for v in await client.list_vms()}
        vm, win = vms["alpha"], vms["win"]
        assert sorted([e.name async for e in client.list_dir(vm, CREDS, "/d")]) == ["a", "b", "c", "e"]
        await client.stat(vm, CREDS, "/d/a")
        async with await client.open_read(vm, CREDS, "/d/a") as t:  # https: the host's certificate is read
            assert b"".join([c async for c in t.chunks()]) == b"a"
        await client.upload(vm, CREDS, "/up", str(src), 5, FileAttributes(permissions=0o640, mtime=1_700_000_000))
        await client.mkdir(vm, CREDS, "/m/n", parents=True)
        await client.move_dir(vm, CREDS, "/m", "/m2")
        await client.move_file(vm, CREDS, "/up", "/up2", overwrite=True)
        await client.set_attributes(vm, CREDS, "/up2", FileAttributes(permissions=0o600, uid=0, gid=0,
                                                                         mtime=1_600_000_000, atime=1_600_000_001))
        await client.set_attributes(win, CREDS, "C:\\w.txt", FileAttributes(mtime=1_600_000_000))
        await client.remove_file(vm, CREDS, "/up2")
        await client.remove_dir(vm, CREDS, "/m2", recursive=True)
        pid = await client.start_program(vm, CREDS, GuestProgram(path="/bin/ln", arguments='"$A" "$B"',
                                                                 env={"A": "-s", "B": "t x"}, working_directory="/"))
        await client.list_processes(vm, CREDS, [pid])
        tmp_file = await client.make_temp(vm, CREDS, prefix="p-", suffix=".s", directory="/d")
        await client.make_temp(vm, CREDS, prefix="q-", is_dir=True)
        with pytest.raises(GuestFileError):  # the simulator takes no SAML; what goes out is what counts here
            await client.stat(vm, GuestCredentials("svc", saml_token="<saml:Assertion>t&</saml:Assertion>"), "/d")
    finally:
        await client.aclose()
    sent = {json.dumps(canonical(body)) for body in recorder.sent}

    content = client._content
    fm = vim.vm.guest.FileManager(client._file_manager, STUB)
    pc = PC(content["propertyCollector"]["value"], STUB)
    vmo, wino = vim.VirtualMachine(vm, STUB), vim.VirtualMachine(win, STUB)
    auth = vim.vm.guest.NamePasswordAuthentication(interactiveSession=False, username="root", password="vmware")
    saml = vim.vm.guest.SAMLTokenAuthentication(interactiveSession=False, token="<saml:Assertion>t&</saml:Assertion>",
                                                username="svc")
    posix = vim.vm.guest.FileManager.PosixFileAttributes
    utc = datetime.timezone.utc
    view_id = None
    for body in recorder.sent:  # the view's id is the server's choice
        root = ET.fromstring(body)
        if root.find(".//{urn:vim25}DestroyView") is not None:
            view_id = root.find(".//{urn:vim25}_this").text
    view = vim.view.ContainerView(view_id, STUB)
    host_spec = PC.FilterSpec(
        propSet=[PC.PropertySpec(type=vim.HostSystem, all=False,
                                 pathSet=["name", "config.certificate", "config.virtualNicManagerInfo.netConfig"])],
        objectSet=[PC.ObjectSpec(obj=vim.HostSystem("host-10", STUB), skip=False)])
    pm = vim.vm.guest.ProcessManager(client._process_manager, STUB)
    vm_spec = PC.FilterSpec(
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, all=False, pathSet=[
            "name", "runtime.powerState", "runtime.host", "guest.guestFamily", "guest.guestOperationsReady",
            "config.template"])],
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="traverseView", type=vim.view.ContainerView, path="view", skip=False)])])
    expected = {
        "RetrieveServiceContent": pyvmomi_request(vim.ServiceInstance("ServiceInstance", STUB), "RetrieveServiceContent"),
        "Login": pyvmomi_request(vim.SessionManager(content["sessionManager"]["value"], STUB), "Login",
                                 sim.vc_user, sim.vc_password, None),
        "Fetch fileManager": pyvmomi_fetch(
            vim.vm.guest.GuestOperationsManager(content["guestOperationsManager"]["value"], STUB), "fileManager"),
        "CreateContainerView": pyvmomi_request(vim.view.ViewManager(content["viewManager"]["value"], STUB),
                                               "CreateContainerView", vim.Folder(content["rootFolder"]["value"], STUB),
                                               [vim.VirtualMachine], True),
        "RetrievePropertiesEx VMs": pyvmomi_request(pc, "RetrievePropertiesEx", [vm_spec], PC.RetrieveOptions(maxObjects=500)),
        "RetrievePropertiesEx host": pyvmomi_request(pc, "RetrievePropertiesEx", [host_spec], PC.RetrieveOptions(maxObjects=500)),
        "DestroyView": pyvmomi_request(view, "DestroyView"),
        "ListFilesInGuest page 1": pyvmomi_request(fm, "ListFilesInGuest", vmo, auth, "/d", 0, 3, None),
        "ListFilesInGuest page 2": pyvmomi_request(fm, "ListFilesInGuest", vmo, auth, "/d", 3, 3, None),
        "ListFilesInGuest stat": pyvmomi_request(fm, "ListFilesInGuest", vmo, auth, "/d/a", None, 1, None),
        "ListFilesInGuest SAML": pyvmomi_request(fm, "ListFilesInGuest", vmo, saml, "/d", None, 1, None),
        "InitiateFileTransferFromGuest": pyvmomi_request(fm, "InitiateFileTransferFromGuest", vmo, auth, "/d/a"),
        "InitiateFileTransferToGuest": pyvmomi_request(
            fm, "InitiateFileTransferToGuest", vmo, auth, "/up",
            posix(permissions=0o640, modificationTime=datetime.datetime.fromtimestamp(1_700_000_000, utc)), 5, True),
        "MakeDirectoryInGuest": pyvmomi_request(fm, "MakeDirectoryInGuest", vmo, auth, "/m/n", True),
        "MoveDirectoryInGuest": pyvmomi_request(fm, "MoveDirectoryInGuest", vmo, auth, "/m", "/m2"),
        "MoveFileInGuest": pyvmomi_request(fm, "MoveFileInGuest", vmo, auth, "/up", "/up2", True),
        "ChangeFileAttributesInGuest posix": pyvmomi_request(
            fm, "ChangeFileAttributesInGuest", vmo, auth, "/up2",
            posix(permissions=0o600, ownerId=0, groupId=0,
                  modificationTime=datetime.datetime.fromtimestamp(1_600_000_000, utc),
                  accessTime=datetime.datetime.fromtimestamp(1_600_000_001, utc))),
        "ChangeFileAttributesInGuest windows": pyvmomi_request(
            fm, "ChangeFileAttributesInGuest", wino, auth, "C:\\w.txt",
            vim.vm.guest.FileManager.WindowsFileAttributes(
                modificationTime=datetime.datetime.fromtimestamp(1_600_000_000, utc))),
        "Fetch processManager": pyvmomi_fetch(
            vim.vm.guest.GuestOperationsManager(content["guestOperationsManager"]["value"], STUB), "processManager"),
        "StartProgramInGuest": pyvmomi_request(
            pm, "StartProgramInGuest", vmo, auth,
            vim.vm.guest.ProcessManager.ProgramSpec(programPath="/bin/ln", arguments='"$A" "$B"',
                                                    workingDirectory="/", envVariables=["A=-s", "B=t x"])),
        "ListProcessesInGuest": pyvmomi_request(pm, "ListProcessesInGuest", vmo, auth, [pid]),
        "DeleteFileInGuest": pyvmomi_request(fm, "DeleteFileInGuest", vmo, auth, "/up2"),
        "DeleteDirectoryInGuest": pyvmomi_request(fm, "DeleteDirectoryInGuest", vmo, auth, "/m2", True),
        "CreateTemporaryFileInGuest": pyvmomi_request(fm, "CreateTemporaryFileInGuest", vmo, auth, "p-", ".s", "/d"),
        "CreateTemporaryDirectoryInGuest": pyvmomi_request(fm, "CreateTemporaryDirectoryInGuest", vmo, auth, "q-", "",
                                                           None),
        "Logout": pyvmomi_request(vim.SessionManager(content["sessionManager"]["value"], STUB), "Logout"),
    }
    assert tmp_file.startswith("/d/p-")
    missing = [name for name, body in expected.items() if json.dumps(canonical(body)) not in sent]
    assert not missing, f"the client sent no request equal to pyVmomi's for {missing}"
    assert len(sent) >= len(expected)


# ------------------------------------------------------------------------------------------- answers as pyVmomi writes them
def test_property_values_decode_to_the_shapes_unbox_gives():
    """A host's certificate and management network, a power state, a boolean and a MoRef in DynamicProperty.val,
    as pyVmomi serialises them, decode as VI/JSON's unbox() leaves them."""
    net = vim.host.VirtualNicManager.NetConfig(
        nicType="management", multiSelectAllowed=True, selectedVnic=["key-vim.host.VirtualNic-vmk0"],
        candidateVnic=[vim.host.VirtualNic(device="vmk0", key="key-vim.host.VirtualNic-vmk0", portgroup="Management",
                                           spec=vim.host.VirtualNic.Specification(
                                               mtu=9000, ip=vim.host.IpConfig(dhcp=False, ipAddress="10.0.0.5",
                                                                              subnetMask="255.255.255.0")))])
    pem = b"-----BEGIN CERTIFICATE-----\n\xfe"
    props = [
        vmodl.DynamicProperty(name="config.virtualNicManagerInfo.netConfig",
                              val=V.GetVmodlType("vim.host.VirtualNicManager.NetConfig[]")([net])),
        vmodl.DynamicProperty(name="config.certificate",
                              val=V.GetVmodlType("byte[]")([b - 256 if b > 127 else b for b in pem])),
        vmodl.DynamicProperty(name="name", val="esx01.lab"),
        vmodl.DynamicProperty(name="runtime.powerState", val=vim.VirtualMachine.PowerState.poweredOn),
        vmodl.DynamicProperty(name="guest.guestOperationsReady", val=True),
        vmodl.DynamicProperty(name="runtime.host", val=vim.HostSystem("host-9", STUB)),
        vmodl.DynamicProperty(name="view", val=V.GetVmodlType("vim.ManagedEntity[]")([vim.VirtualMachine("vm-1", STUB)])),
    ]
    result = PC.RetrieveResult(token="7", objects=[PC.ObjectContent(obj=vim.HostSystem("host-9", STUB), propSet=props)])
    got = decode(pyvmomi_answer("RetrievePropertiesEx", result, PC.RetrieveResult), "RetrievePropertiesEx")
    assert got["_typeName"] == "RetrieveResult" and got["token"] == "7"
    [content] = got["objects"]
    assert content["obj"] == {"_typeName": "ManagedObjectReference", "type": "HostSystem", "value": "host-9"}
    vals = {p["name"]: p["val"] for p in content["propSet"]}
    assert vals["config.virtualNicManagerInfo.netConfig"] == [{
        "_typeName": "VirtualNicManagerNetConfig", "nicType": "management", "multiSelectAllowed": True,
        "candidateVnic": [{"_typeName": "HostVirtualNic", "device": "vmk0", "key": "key-vim.host.VirtualNic-vmk0",
                           "portgroup": "Management",
                           "spec": {"_typeName": "HostVirtualNicSpec", "mtu": 9000,
                                    "ip": {"_typeName": "HostIpConfig", "dhcp": False, "ipAddress": "10.0.0.5",
                                           "subnetMask": "255.255.255.0"}}}],
        "selectedVnic": ["key-vim.host.VirtualNic-vmk0"]}]
    assert bytes(b & 0xFF for b in vals["config.certificate"]) == pem and min(vals["config.certificate"]) < 0
    assert vals["name"] == "esx01.lab" and vals["runtime.powerState"] == "poweredOn"
    assert vals["guest.guestOperationsReady"] is True
    assert vals["runtime.host"] == {"_typeName": "ManagedObjectReference", "type": "HostSystem", "value": "host-9"}
    assert vals["view"] == [{"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": "vm-1"}]


def test_guest_answers_decode_typed():
    fm = vim.vm.guest.FileManager
    t = datetime.datetime(2024, 5, 1, 10, 0, tzinfo=datetime.timezone.utc)
    listing = fm.ListFileInfo(remaining=2, files=[fm.FileInfo(
        path="a&b<c>", type="file", size=2**40,
        attributes=fm.PosixFileAttributes(modificationTime=t, ownerId=0, groupId=4, permissions=0o100644))])
    got = decode(pyvmomi_answer("ListFilesInGuest", listing, fm.ListFileInfo), "ListFilesInGuest")
    [entry] = got["files"]  # one <files> is still an array
    assert got["remaining"] == 2 and entry["size"] == 2**40 and entry["path"] == "a&b<c>"
    assert entry["attributes"]["_typeName"] == "GuestPosixFileAttributes"
    assert entry["attributes"]["permissions"] == 0o100644 and entry["attributes"]["groupId"] == 4
    assert entry["attributes"]["modificationTime"].startswith("2024-05-01T10:00:00")
    procs = [vim.vm.guest.ProcessManager.ProcessInfo(name="sleep", pid=2**33, owner="root", cmdLine="sleep 9",
                                                     startTime=t, exitCode=0)]
    got = decode(pyvmomi_answer("ListProcessesInGuest", procs, V.GetVmodlType("vim.vm.guest.ProcessManager.ProcessInfo[]")),
                 "ListProcessesInGuest")
    assert got == [{"_typeName": "GuestProcessInfo", "name": "sleep", "pid": 2**33, "owner": "root",
                    "cmdLine": "sleep 9", "startTime": got[0]["startTime"], "exitCode": 0}]
    assert decode(pyvmomi_answer("StartProgramInGuest", 4711, V.GetVmodlType("long")), "StartProgramInGuest") == 4711
    assert decode(envelope("ListProcessesInGuest", ""), "ListProcessesInGuest") == []
    assert decode(envelope("DeleteFileInGuest", ""), "DeleteFileInGuest") is None


@pytest.mark.parametrize("vim_fault, fields", [
    (vim.fault.FileNotFound(file="/x"), {"file": "/x"}),
    (vim.fault.InvalidPowerState(existingState="poweredOff", requestedState="poweredOn"),
     {"existingState": "poweredOff", "requestedState": "poweredOn"}),
    (vmodl.fault.ManagedObjectNotFound(obj=vim.VirtualMachine("vm-9", STUB)),
     {"obj": {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": "vm-9"}}),
    (vim.fault.NotAuthenticated(privilegeId="System.View"), {"privilegeId": "System.View"}),
    (vim.fault.GuestProcessNotFound(pid=42), {"pid": 42}),
])
def test_faults_as_pyvmomi_writes_them_become_vi_fault_dicts(vim_fault, fields):
    fault = vim_fault
    fault.faultMessage = [vmodl.LocalizableMessage(key="k", message="it failed")]
    kind = V.GetWsdlName(type(fault))
    detail = SerializeFaultDetail(fault, version=VERSION)  # <obj xsi:type="vim25:FileNotFound">: the class by xsi:type
    data = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
            f'<faultcode>ServerFaultCode</faultcode><faultstring>it failed</faultstring><detail>{detail}</detail>'
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>").encode()
    with pytest.raises(soapcodec.SoapFault) as e:
        decode(data, "ListFilesInGuest", status=500)
    body = e.value.body
    assert body["_typeName"] == kind
    assert body["faultMessage"] == [{"_typeName": "LocalizableMessage", "key": "k", "message": "it failed"}]
    for key, value in fields.items():
        assert body[key] == value


# ------------------------------------------------------------------------------------------- ESXi, session, versions
@pytest.fixture
def esxi(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True, extra_args=("--esxi",)) as simulator:
        yield simulator


async def test_a_standalone_esxi_host_is_found_by_auto_and_works(esxi, tmp_path):
    (esxi.root / "alpha/f").write_text("from esxi")
    src = tmp_path / "src"
    src.write_bytes(b"up")
    config = ClientConfig(url=esxi.url, username=esxi.vc_user, password=esxi.vc_password, api="auto",
                          ca_file=esxi.ca_path)
    async with open_client(config) as client:
        assert client.dialect == "soap"
        [vm] = await client.list_vms()
        assert (vm.name, vm.id, vm.host) == ("alpha", "1", "ha-host")
        # `*` is the host itself: verified as the API connection is (ca_file), no certificate to look up
        async with await client.open_read(vm.id, CREDS, "/f") as t:
            assert b"".join([c async for c in t.chunks()]) == b"from esxi"
        await client.upload(vm.id, CREDS, "/g", str(src), 2)
        assert sorted([e.name async for e in client.list_dir(vm.id, CREDS, "/")]) == ["f", "g"]
    assert (esxi.root / "alpha/g").read_bytes() == b"up"
    assert esxi.stats().get("RetrievePropertiesEx", 0) == 1  # the VM list only


async def test_the_session_is_the_cookie_login_sets_and_expiry_is_a_silent_relogin(sim):
    (sim.root / "alpha/f").write_text("x")
    config = ClientConfig(url=sim.url, username=sim.vc_user, password=sim.vc_password, api="soap")
    async with open_client(config) as client:
        first = client._token
        assert first and first.strip('"') and client.http.cookies.jar is not None and len(client.http.cookies) == 0
        vm = next(v.id for v in await client.list_vms() if v.name == "alpha")
        sim.reset_stats()
        sim.expire_sessions()
        assert (await client.stat(vm, CREDS, "/f")).size == 1
        assert client._token != first
        assert sim.stats()["Login"] == 1 and sim.stats()["ListFilesInGuest"] == 2


async def test_a_wrong_password_is_an_authentication_error(sim):
    with pytest.raises(AuthenticationError) as e:
        async with open_client(ClientConfig(url=sim.url, username=sim.vc_user, password="wrong", api="soap")):
            pass
    assert e.value.errno == errno.EACCES and "wrong" not in str(e.value)


def test_version_is_the_newest_both_sides_know():
    assert newest_common(["9.0.0.0", "8.0.3.0", "8.0.2.0", "2.5u2server"]) == "8.0.3.0"
    assert newest_common(["7.0.3.0", "7.0.2.0", "6.7"]) == "7.0.3.0"
    assert newest_common(["x", None]) is None


async def test_without_a_versions_document_the_servers_api_version_is_used():
    """A server without /sdk/vimServiceVersions.xml: the version comes from AboutInfo.apiVersion, capped at ours."""
    client = SoapClient(ClientConfig(url="http://127.0.0.1:9", username="u", password="p", api="soap"),
                        httpx.AsyncClient())
    try:
        assert client._soap_version == "6.5"
        client._learn_version({"_typeName": "ServiceContent", "about": {"apiVersion": "7.0.3.0"}})
        assert client._soap_version == "7.0.3.0"
        client._version_known = False
        client._learn_version({"about": {"apiVersion": "9.1.0.0"}})
        assert client._soap_version == "8.0.3.0"
    finally:
        await client.http.aclose()


# ------------------------------------------------------------------------------------------- nonsense
FAULT_UNKNOWN = fault("FluxCapacitor", "the flux capacitor", "<gigawatts>1.21</gigawatts>")


@pytest.mark.parametrize("status, body, says", [
    (200, b"<html><body>Service Unavailable</body></html>", "not a SOAP envelope"),
    (503, b"<html><body>maintenance", "not XML"),
    (200, envelope("RetrieveServiceContent", "<returnval><rootFolder type=\"Folder\">g</rootFolder>")[:-40], "not XML"),
    (200, b"", "not XML"),
    (200, billion_laughs("RetrieveServiceContent"), "DTD"),
    (200, envelope("Login", ""), "not RetrieveServiceContentResponse"),
    (500, envelope("RetrieveServiceContent", ""), "no SOAP fault"),
])
async def test_nonsense_from_the_server_is_a_clear_protocol_error(status, body, says):
    with bad_server({"/sdk": Answer(status, body, "text/xml")}) as server:
        with trio.fail_after(20), pytest.raises(ProtocolError) as e:
            async with open_client(ClientConfig(url=server.url, username="u", password="p", api="soap")):
                pass
    assert says in str(e.value) and e.value.errno == errno.EIO


def test_a_fault_of_an_unknown_class_keeps_its_name_and_maps_to_eio():
    from guestfs_mount.vsphere.faultmap import vi_fault_error

    with pytest.raises(soapcodec.SoapFault) as e:
        decode(FAULT_UNKNOWN, "MakeDirectoryInGuest", status=500)
    error = vi_fault_error(e.value.body, path="/d", vm="vm-1")
    assert error.fault == "FluxCapacitor"  # its xsi:type names it
    assert error.errno == errno.EIO and "flux capacitor" in str(error)


@pytest.mark.parametrize("data, says", [
    (envelope("ListFilesInGuest", "<returnval><remaining>many</remaining></returnval>"), "not an xsd:int"),
    (envelope("ListFilesInGuest", "<returnval><files><path>a</path><size>1</size><size>2</size></files></returnval>"),
     "more than once"),
    (envelope("CreateContainerView", "<returnval>session[1]</returnval>"), "without a type"),
    (envelope("ListFilesInGuest", "<returnval/><returnval/>"), "2 return values"),
    (envelope("ListFilesInGuest", "<returnval>" + "<a>" * 100 + "</a>" * 100 + "</returnval>"), "nested deeper"),
])
def test_wrongly_typed_answers_are_protocol_errors(data, says):
    with pytest.raises(ProtocolError, match=says):
        decode(data, data.split(b"<soapenv:Body><")[1].split(b"Response")[0].decode())


def test_a_name_xml_cannot_carry_is_refused_before_sending():
    with pytest.raises(soapcodec.Unencodable):
        soapcodec.request("DeleteFileInGuest", {"type": "GuestFileManager", "value": "fm"}, {"filePath": "/a\x01b"})
    data = soapcodec.request("DeleteFileInGuest", {"type": "GuestFileManager", "value": "fm"}, {"filePath": "/a\rb&"})
    assert ET.fromstring(data).find(".//{urn:vim25}filePath").text == "/a\rb&"  # CR survives XML's line endings


def test_boxed_values_and_unknown_methods_encode_with_their_types():
    """A value in an anyType slot goes with its xsi:type, a MoRef there as ManagedObjectReference; a method the table
    does not know keeps the parameters in the order given."""
    data = soapcodec.request("SetCustomValue", {"_typeName": "ManagedObjectReference", "type": "VirtualMachine",
                                                "value": "vm-1"},
                             {"key": "k", "value": {"_typeName": "int", "_value": 5},
                              "list": {"_typeName": "ArrayOfString", "_value": ["a", "b"]},
                              "ref": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "f"}})
    call = ET.fromstring(data).find(".//{urn:vim25}SetCustomValue")
    xsi = "{http://www.w3.org/2001/XMLSchema-instance}type"
    assert [c.tag.split("}")[1] for c in call] == ["_this", "key", "value", "list", "ref"]
    assert (call[2].get(xsi), call[2].text) == ("xsd:int", "5")
    assert call[3].get(xsi) == "ArrayOfString" and [c.text for c in call[3]] == ["a", "b"]
    assert (call[4].get("type"), call[4].text, call[4].get(xsi)) == ("Folder", "f", None)
