"""The simulator's SOAP endpoint (`/sdk`) driven by pyVmomi, VMware's own SDK, over real sockets: SmartConnect over TLS
and plain HTTP, inventory and properties, paging, every GuestFileManager method with its transfers, faults as vim
fault classes (planned ones too), sessions, the ESXi flavour, and bad input that must not take the server down."""

import datetime
import hashlib
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("pyVmomi")

from pyVim.connect import Disconnect, SmartConnect  # noqa: E402
from pyVmomi import SoapStubAdapter, vim, vmodl  # noqa: E402
from pyVmomi.SoapAdapter import SoapResponseDeserializer  # noqa: E402

from tests.helpers.simulator import running_simulator  # noqa: E402

VMS = ("alpha", "beta", "gamma", "delta", "offvm", "notools")
PC = vmodl.query.PropertyCollector
Posix = vim.vm.guest.FileManager.PosixFileAttributes


def port_of(sim) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def connect(sim, **kw):
    args = dict(host="127.0.0.1", port=port_of(sim), user=sim.vc_user, pwd=sim.vc_password, connectionPoolTimeout=0)
    if sim.url.startswith("https:"):
        args["disableSslCertValidation"] = True
    else:
        args["protocol"] = "http"
    return SmartConnect(**{**args, **kw})


def make_root(base, names=VMS):
    root = base / "vms"
    for name in names:
        (root / name).mkdir(parents=True)
    (root / ".vms.json").write_text(json.dumps({"offvm": {"powerState": "poweredOff"}, "notools": {"toolsRunning": False}}))
    return root


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("soap")
    with running_simulator(make_root(base), log_path=base / "sim.log", tls=True) as sim:
        yield sim


@pytest.fixture(scope="module")
def si(tls_sim):
    si = connect(tls_sim)
    yield si
    Disconnect(si)


@pytest.fixture
def auth(tls_sim):
    return vim.vm.guest.NamePasswordAuthentication(username=tls_sim.guest_user, password=tls_sim.guest_password)


def find_vm(si, name):
    content = si.RetrieveContent()
    dc = content.about.apiType == "HostAgent" and "ha-datacenter" or "Datacenter"
    vm = content.searchIndex.FindByInventoryPath(f"{dc}/vm/{name}")
    assert isinstance(vm, vim.VirtualMachine), name
    return vm


def local(url: str, sim) -> str:
    scheme = sim.url.split("://")[0]
    assert url.startswith(f"{scheme}://*:{port_of(sim)}/guestFile?"), url
    return url.replace("*", "127.0.0.1", 1)


def container_spec(view, mo_type, paths, **options):
    traversal = PC.TraversalSpec(name="traverseView", path="view", skip=False, type=vim.view.ContainerView)
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
        propSet=[PC.PropertySpec(type=mo_type, pathSet=paths)],
    )


# ---------------------------------------------------------------- connection and inventory


def test_smartconnect_over_tls_negotiates_8_0_3_and_holds_a_session_cookie(si):
    about = si.RetrieveContent().about
    assert (about.apiType, about.apiVersion, about.productLineId) == ("VirtualCenter", "8.0.3.0", "vpx")
    assert si._stub.versionId == '"urn:vim25/8.0.3.0"'  # the SOAPAction it sends, from vimServiceVersions.xml
    assert "vmware_soap_session=" in si._stub.cookie
    session = si.content.sessionManager.currentSession
    assert isinstance(session, vim.UserSession) and session.userName == "administrator@vsphere.local"


def test_container_view_and_the_vm_properties_the_mount_reads(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vms = {vm.name: vm for vm in view.view}  # `view` and `name` are property reads (Fetch)
    assert sorted(vms) == sorted(VMS)
    alpha = vms["alpha"]
    assert alpha.runtime.powerState == "poweredOn" and isinstance(alpha.runtime.host, vim.HostSystem)
    assert (alpha.guest.guestFamily, alpha.guest.guestOperationsReady, alpha.config.template) == ("linuxGuest", True, False)
    # the same through the PropertyCollector, as the mount asks for them
    paths = ["name", "runtime.powerState", "runtime.host", "guest.guestFamily", "guest.guestOperationsReady", "config.template"]
    result = content.propertyCollector.RetrievePropertiesEx([container_spec(view, vim.VirtualMachine, paths)], PC.RetrieveOptions())
    props = {o.obj._moId: {p.name: p.val for p in o.propSet} for o in result.objects}
    by_name = {p["name"]: p for p in props.values()}
    assert by_name["offvm"]["runtime.powerState"] == vim.VirtualMachine.PowerState.poweredOff
    assert by_name["notools"]["guest.guestOperationsReady"] is False and by_name["alpha"]["guest.guestOperationsReady"] is True
    assert by_name["beta"]["runtime.host"]._moId == alpha.runtime.host._moId
    assert by_name["beta"]["config.template"] is False and by_name["beta"]["guest.guestFamily"] == "linuxGuest"
    assert result.token is None
    view.DestroyView()


def test_host_name_and_certificate_are_the_served_leaf(si, tls_sim):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    spec = container_spec(view, vim.HostSystem, ["name", "config.certificate", "summary.config.sslThumbprint"])
    (host,) = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions()).objects
    props = {p.name: p.val for p in host.propSet}
    pem = bytes(b & 0xFF for b in props["config.certificate"]).decode()
    served = ssl.get_server_certificate(("127.0.0.1", port_of(tls_sim)))
    der = ssl.PEM_cert_to_DER_cert(served)
    assert ssl.PEM_cert_to_DER_cert(pem) == der
    assert props["summary.config.sslThumbprint"].replace(":", "").lower() == hashlib.sha1(der).hexdigest()
    assert props["name"] == host.obj.name == "localhost"


def test_retrieve_properties_ex_pages_and_continues(si):
    content = si.RetrieveContent()
    pc = content.propertyCollector
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = container_spec(view, vim.VirtualMachine, ["name"])
    page = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=2))
    names, pages = [], 1
    while True:
        assert len(page.objects) <= 2
        names += [o.propSet[0].val for o in page.objects]
        if not page.token:
            break
        page = pc.ContinueRetrievePropertiesEx(page.token)
        pages += 1
    assert sorted(names) == sorted(VMS) and pages == 3
    # RetrieveContents is RetrieveProperties: everything at once
    assert sorted(o.propSet[0].val for o in pc.RetrieveContents([spec])) == sorted(VMS)
    # a cancelled token is spent
    token = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=1)).token
    pc.CancelRetrievePropertiesEx(token)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pc.ContinueRetrievePropertiesEx(token)


# ---------------------------------------------------------------- guest files


def test_every_file_manager_method_with_its_transfers(si, tls_sim, auth):
    fm = si.RetrieveContent().guestOperationsManager.fileManager
    vm = find_vm(si, "alpha")
    root = tls_sim.root / "alpha"
    fm.MakeDirectoryInGuest(vm, auth, "/soap/a/b", True)
    assert (root / "soap/a/b").is_dir()
    data = "snow ☃ & <tags>\n".encode() * 1000
    url = fm.InitiateFileTransferToGuest(vm, auth, "/soap/a/b/f.txt", Posix(permissions=0o640), len(data), False)
    with httpx.Client(verify=tls_sim.verify, timeout=30) as http:
        put = http.put(local(url, tls_sim), content=data)
        assert put.status_code == 200
        assert (root / "soap/a/b/f.txt").read_bytes() == data
        assert stat.S_IMODE(os.stat(root / "soap/a/b/f.txt").st_mode) == 0o640

        listing = fm.ListFilesInGuest(vm, auth, "/soap/a/b")
        assert [f.path for f in listing.files] == [".", "..", "f.txt"] and listing.remaining == 0
        entry = listing.files[2]
        assert (entry.type, entry.size) == ("file", len(data))
        assert isinstance(entry.attributes, Posix) and entry.attributes.permissions == 0o100640

        info = fm.InitiateFileTransferFromGuest(vm, auth, "/soap/a/b/f.txt")
        assert info.size == len(data) and info.attributes.permissions == 0o100640
        assert http.get(local(info.url, tls_sim)).content == data

    when = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    fm.ChangeFileAttributesInGuest(vm, auth, "/soap/a/b/f.txt", Posix(permissions=0o600, modificationTime=when))
    st = os.stat(root / "soap/a/b/f.txt")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == when.timestamp()

    fm.MoveFileInGuest(vm, auth, "/soap/a/b/f.txt", "/soap/a/g.txt", False)
    fm.MoveDirectoryInGuest(vm, auth, "/soap/a/b", "/soap/c")
    assert (root / "soap/a/g.txt").read_bytes() == data and (root / "soap/c").is_dir() and not (root / "soap/a/b").exists()

    temp = fm.CreateTemporaryFileInGuest(vm, auth, "pre-", ".tmp", "/soap")
    temp_dir = fm.CreateTemporaryDirectoryInGuest(vm, auth, "d-", "", "/soap")
    assert temp.startswith("/soap/pre-") and temp.endswith(".tmp") and (root / temp[1:]).is_file()
    assert (root / temp_dir[1:]).is_dir()
    fm.DeleteFileInGuest(vm, auth, temp)
    assert not (root / temp[1:]).exists()
    fm.DeleteDirectoryInGuest(vm, auth, "/soap", True)
    assert not (root / "soap").exists()


def test_listing_pages_pattern_and_single_file(si, tls_sim, auth):
    fm = si.RetrieveContent().guestOperationsManager.fileManager
    vm = find_vm(si, "gamma")
    d = tls_sim.root / "gamma" / "many"
    d.mkdir()
    for i in range(7):
        (d / f"f{i}").write_text(str(i))
    seen, index = [], 0
    while True:
        page = fm.ListFilesInGuest(vm, auth, "/many", index, 3)
        seen += [f.path for f in page.files]
        index += len(page.files)
        if not page.remaining:
            break
        assert page.remaining == 9 - index
    assert sorted(seen) == sorted([".", ".."] + [f"f{i}" for i in range(7)])
    assert sorted(f.path for f in fm.ListFilesInGuest(vm, auth, "/many", matchPattern="^f[0-2]$").files) == ["f0", "f1", "f2"]
    counted = fm.ListFilesInGuest(vm, auth, "/many", maxResults=0)
    assert not counted.files and counted.remaining == 9
    (one,) = fm.ListFilesInGuest(vm, auth, "/many/f3").files
    assert (one.path, one.size) == ("/many/f3", 1)


# ---------------------------------------------------------------- faults


def test_guest_faults_are_vim_fault_classes(si, tls_sim, auth):
    fm = si.RetrieveContent().guestOperationsManager.fileManager
    vm = find_vm(si, "beta")
    (tls_sim.root / "beta" / "d").mkdir()
    (tls_sim.root / "beta" / "d" / "x").write_text("x")
    with pytest.raises(vim.fault.FileNotFound) as err:
        fm.ListFilesInGuest(vm, auth, "/nope")
    assert err.value.file == "/nope" and "/nope" in err.value.msg
    with pytest.raises(vim.fault.InvalidGuestLogin):
        fm.ListFilesInGuest(vm, vim.vm.guest.NamePasswordAuthentication(username="root", password="wrong"), "/")
    with pytest.raises(vim.fault.NotAFile):
        fm.InitiateFileTransferFromGuest(vm, auth, "/d")
    with pytest.raises(vim.fault.FileAlreadyExists):
        fm.MakeDirectoryInGuest(vm, auth, "/d", False)
    with pytest.raises(vim.fault.DirectoryNotEmpty):
        fm.DeleteDirectoryInGuest(vm, auth, "/d", False)
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        fm.ListFilesInGuest(vm, auth, "/", matchPattern="(")
    assert err.value.invalidProperty == "matchPattern"
    with pytest.raises(vim.fault.InvalidPowerState) as err:
        fm.ListFilesInGuest(find_vm(si, "offvm"), auth, "/")
    assert err.value.existingState == "poweredOff"
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        fm.ListFilesInGuest(find_vm(si, "notools"), auth, "/")
    with pytest.raises(vmodl.fault.ManagedObjectNotFound) as err:
        fm.ListFilesInGuest(vim.VirtualMachine("vm-999", si._stub), auth, "/")
    assert err.value.obj._moId == "vm-999"
    with pytest.raises(vmodl.query.InvalidProperty):
        vm.summary  # a property the simulator does not serve


def test_planned_faults_reach_soap_callers_as_soap_faults(si, tls_sim, auth):
    fm = si.RetrieveContent().guestOperationsManager.fileManager
    vm = find_vm(si, "delta")
    tls_sim.fault("ListFilesInGuest", "TooManyGuestLogons", vm="delta")
    with pytest.raises(vim.fault.TooManyGuestLogons):
        fm.ListFilesInGuest(vm, auth, "/")
    assert fm.ListFilesInGuest(vm, auth, "/").remaining == 0  # taken once
    tls_sim.fault("InitiateFileTransferToGuest", "NoDiskSpace")
    with pytest.raises(vim.fault.NoDiskSpace):
        fm.InitiateFileTransferToGuest(vm, auth, "/f", Posix(), 1, True)
    tls_sim.fault("runtime", "SystemError")  # a property read is planned under the property's name
    with pytest.raises(vmodl.fault.SystemError):
        vm.runtime
    tls_sim.fault("RetrievePropertiesEx", "NotAuthenticated")
    with pytest.raises(vim.fault.NotAuthenticated):
        si.content.propertyCollector.RetrievePropertiesEx([PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vm)], propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])])], PC.RetrieveOptions())


def test_calls_are_counted_under_the_names_of_the_other_dialects(si, tls_sim, auth):
    vm = find_vm(si, "alpha")
    fm = si.RetrieveContent().guestOperationsManager.fileManager
    tls_sim.reset_stats()
    fm.ListFilesInGuest(vm, auth, "/")
    assert vm.name == "alpha"
    si.RetrieveContent()
    assert tls_sim.stats() == {"ListFilesInGuest": 1, "name": 1, "RetrieveServiceContent": 1}


# ---------------------------------------------------------------- sessions, plain HTTP


def test_plain_http_session_login_logout_expiry(sim):
    with pytest.raises(vim.fault.InvalidLogin):
        connect(sim, pwd="wrong")
    si = connect(sim)
    assert si._stub.scheme.__name__ == "HTTPConnection"
    content = si.RetrieveContent()
    vm = find_vm(si, "alpha")
    assert vm.name == "alpha"
    sim.expire_sessions()
    with pytest.raises(vim.fault.NotAuthenticated):
        vm.name
    content.sessionManager.Login(sim.vc_user, sim.vc_password)  # the same stub logs in again (a new cookie)
    assert vm.name == "alpha"
    content.sessionManager.Logout()
    with pytest.raises(vim.fault.NotAuthenticated):
        vm.runtime
    assert si.RetrieveContent().about.apiType == "VirtualCenter"  # needs no session


def test_a_cookie_comes_before_login_and_login_sets_the_session(sim):
    envelope = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{}'
                "</soapenv:Body></soapenv:Envelope>")
    login = ('<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
             f"<userName>{sim.vc_user}</userName><password>{sim.vc_password}</password></Login>")
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        content = envelope.format('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>')
        first = http.post("/sdk", content=content)
        assert first.status_code == 200 and first.headers["content-type"] == "text/xml; charset=utf-8"
        anonymous = first.cookies["vmware_soap_session"].strip('"')
        logged = http.post("/sdk", content=envelope.format(login))  # the jar sends the anonymous cookie
        session = logged.cookies["vmware_soap_session"].strip('"')
        assert logged.status_code == 200 and session != anonymous
        assert "HttpOnly" in logged.headers["set-cookie"] and "Secure" not in logged.headers["set-cookie"]
        assert "set-cookie" not in http.post("/sdk", content=content).headers  # a caller with a cookie gets none
    for cookie, user in ((session, sim.vc_user), (anonymous, None)):  # the cookie before Login is no session
        stub = SoapStubAdapter(host="127.0.0.1", port=-port_of(sim), version="vim.version.v8_0_3_0")
        stub.cookie = f'vmware_soap_session="{cookie}"; Path=/; HttpOnly'  # as pyVmomi sends it back
        current = vim.ServiceInstance("ServiceInstance", stub).content.sessionManager.currentSession
        assert (current and current.userName) == user


def test_latency_applies_to_soap_calls(tmp_path):
    with running_simulator(make_root(tmp_path, ("alpha",)), log_path=tmp_path / "sim.log", latency_ms=300) as sim:
        si = connect(sim)
        start = time.monotonic()
        si.RetrieveContent()
        assert time.monotonic() - start >= 0.3
        Disconnect(si)


# ---------------------------------------------------------------- a standalone ESXi host


def test_esxi_mode_is_a_host_agent_with_ha_ids_and_star_transfer_urls(tmp_path):
    root = make_root(tmp_path, ("alpha", "beta"))
    (root / "alpha" / "f").write_bytes(b"from esxi")
    with running_simulator(root, log_path=tmp_path / "sim.log", extra_args=["--esxi"]) as sim:
        si = connect(sim)
        content = si.RetrieveContent()
        assert (content.about.apiType, content.about.productLineId) == ("HostAgent", "embeddedEsx")
        assert (content.rootFolder._moId, content.sessionManager._moId) == ("ha-folder-root", "ha-sessionmgr")
        vm = find_vm(si, "alpha")
        assert vm._moId.isdigit()
        assert vm.runtime.host._moId == "ha-host"
        dc = content.searchIndex.FindByInventoryPath("ha-datacenter")
        assert dc._moId == "ha-datacenter" and dc.name == "ha-datacenter"
        auth = vim.vm.guest.NamePasswordAuthentication(username=sim.guest_user, password=sim.guest_password)
        info = content.guestOperationsManager.fileManager.InitiateFileTransferFromGuest(vm, auth, "/f")
        with httpx.Client(base_url=sim.url, timeout=10) as http:
            assert http.get(local(info.url, sim)).content == b"from esxi"
            # ESXi has neither VI/JSON nor the Automation REST API
            assert http.get("/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/content").status_code == 404
            assert http.post("/api/session", auth=(sim.vc_user, sim.vc_password)).status_code == 404
        Disconnect(si)
    refused = subprocess.run(
        [sys.executable, "-m", "guestfs_mount.sim", "--root", str(root), "--esxi", "--transfer-host", "esx1"],
        capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode == 2 and "--transfer-host" in refused.stderr


# ---------------------------------------------------------------- bad input


def raw(sim, payload: bytes) -> bytes:
    """Send raw bytes on a new connection; returns everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port_of(sim)), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_input_gets_invalid_request_faults_and_the_server_stays_up(sim):
    stub = SoapStubAdapter(host="127.0.0.1", version="vim.version.v8_0_3_0")
    result_type = vim.ServiceInstance("ServiceInstance", stub)._GetMethodInfo("RetrieveContent").result
    laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)
    ) + ']><lolz>&lol9;</lolz>'
    bodies = [
        b"not xml",
        b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Bo',
        laughs.encode(),
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><Nope xmlns="urn:vim25"/></soapenv:Body></soapenv:Envelope>',
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><Login xmlns="urn:vim25">'
        b'<_this type="SessionManager">SessionManager</_this><userName>x</userName></Login></soapenv:Body></soapenv:Envelope>',
    ]
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        for body in bodies:
            r = http.post("/sdk", content=body, headers={"Content-Type": "text/xml"})
            assert r.status_code == 500 and r.headers["content-type"].startswith("text/xml"), body
            fault = SoapResponseDeserializer(stub).Deserialize(r.content, result_type)
            assert isinstance(fault, vmodl.fault.InvalidRequest), body
            assert fault.msg
        assert http.get("/sdk").status_code == 405
        assert http.get("/sdk/nothing.xml").status_code == 404
    # a chunked body and an oversized one are refused with a fault too, and the connection is closed
    chunked = raw(sim, b"POST /sdk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    huge = raw(sim, b"POST /sdk HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n<a/>")
    for answer in (chunked, huge):
        assert answer.startswith(b"HTTP/1.1 500") and b"InvalidRequestFault" in answer
    si = connect(sim)  # still serving
    assert si.RetrieveContent().about.apiType == "VirtualCenter"
    Disconnect(si)
