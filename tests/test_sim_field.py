"""The simulator's options for how real vCenters, ESXi hosts and the Tools agent behave (issue 16), checked at the
wire: hosts with their own names, addresses and certificates, migration, compressed bodies, `*` without a port,
old versions, the REST VM-list limit, the agent's paging with skipped entries, symlink attributes, privileges,
session ids handed out again, REST permission and time forms."""

from __future__ import annotations

import gzip
import os
import socket
import ssl
from datetime import datetime, timezone

import httpx
import pytest
from cryptography import x509

from tests.helpers.simulator import RestCaller, ViCaller, running_simulator

HOSTS = "esx01.sim.invalid=127.0.0.11,esx02.sim.invalid=127.0.0.12"


def sim_with(tmp_path, *args, tls=False, vms=("alpha", "beta")):
    root = tmp_path / "vms"
    for name in vms:
        (root / name).mkdir(parents=True, exist_ok=True)
    return running_simulator(root, log_path=tmp_path / "sim.log", tls=tls, extra_args=list(args))


def host_props(vi: ViCaller, host: str, *paths: str) -> dict:
    r = vi.post("PropertyCollector", "propertyCollector", "RetrievePropertiesEx", {
        "specSet": [{"_typeName": "PropertyFilterSpec",
                     "propSet": [{"_typeName": "PropertySpec", "type": "HostSystem", "pathSet": list(paths)}],
                     "objectSet": [{"_typeName": "ObjectSpec",
                                    "obj": {"_typeName": "ManagedObjectReference", "type": "HostSystem",
                                            "value": host}}]}],
        "options": {"_typeName": "RetrieveOptions"}})
    r.raise_for_status()
    return {p["name"]: p["val"] for p in r.json()["objects"][0]["propSet"]}


def vm_host(vi: ViCaller, vm: str) -> str:
    r = vi.get("VirtualMachine", vi.vm_id(vm), "runtime")
    r.raise_for_status()
    return r.json()["host"]["value"]


def served_certificate(address: str, port: int, server_name: str | None = None) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)


def test_hosts_have_their_own_names_addresses_certificates_and_migrate(tmp_path):
    with sim_with(tmp_path, "--hosts", HOSTS, tls=True) as sim:
        port = httpx.URL(sim.url).port
        vi = ViCaller(sim)
        try:
            assert vm_host(vi, "alpha") == "host-10" and vm_host(vi, "beta") == "host-11"  # round robin
            props = host_props(vi, "host-10", "name", "config.certificate", "config.virtualNicManagerInfo.netConfig",
                               "summary.config.sslThumbprint")
            assert props["name"]["_value"] == "esx01.sim.invalid"
            [management] = [c for c in props["config.virtualNicManagerInfo.netConfig"]["_value"]
                            if c["nicType"] == "management"]
            assert management["selectedVnic"] == [management["candidateVnic"][0]["key"]]
            assert management["candidateVnic"][0]["spec"]["ip"]["ipAddress"] == "127.0.0.11"
            pem = bytes(b & 0xFF for b in props["config.certificate"]["_value"]).decode()
            # the host's own socket presents that certificate; so does vCenter's for the host's name (SNI)
            assert served_certificate("127.0.0.11", port) == ssl.PEM_cert_to_DER_cert(pem)
            assert served_certificate("127.0.0.1", port, "esx01.sim.invalid") == ssl.PEM_cert_to_DER_cert(pem)
            assert served_certificate("127.0.0.12", port) != ssl.PEM_cert_to_DER_cert(pem)
            with pytest.raises(ssl.SSLCertVerificationError):  # self-signed: the simulator's CA did not sign it
                ssl.get_server_certificate(("127.0.0.11", port), ca_certs=sim.ca_path)
            ssl.get_server_certificate(("127.0.0.1", port), ca_certs=sim.ca_path)  # vCenter's is the CA's

            (sim.root / "alpha/f").write_bytes(b"on esx01")
            url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
            assert url.startswith(f"https://esx01.sim.invalid:{port}/guestFile?")
            with httpx.Client(verify=False, timeout=10) as http:
                query = url.split("?", 1)[1]
                assert http.get(f"https://127.0.0.11:{port}/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/"
                                f"content").status_code == 404  # a host's address is no vCenter
                assert http.get(f"https://127.0.0.12:{port}/guestFile?{query}").status_code == 404  # not its VM
                assert http.get(f"https://127.0.0.11:{port}/guestFile?{query}").content == b"on esx01"

                url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
                sim.migrate("alpha", "esx02.sim.invalid")
                assert vm_host(vi, "alpha") == "host-11"
                query = url.split("?", 1)[1]
                assert http.get(f"https://127.0.0.12:{port}/guestFile?{query}").status_code == 404  # died with it
                url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
                assert url.startswith(f"https://esx02.sim.invalid:{port}/")
                assert http.get(f"https://127.0.0.12:{port}/guestFile?{url.split('?', 1)[1]}").content == b"on esx01"
            sim.migrate("alpha")  # no host named: the next one
            assert vm_host(vi, "alpha") == "host-10"
        finally:
            vi.close()


def test_expired_host_certificates(tmp_path):
    with sim_with(tmp_path, "--hosts", HOSTS, "--host-cert-expired", tls=True) as sim:
        der = served_certificate("127.0.0.12", httpx.URL(sim.url).port)
    assert x509.load_der_x509_certificate(der).not_valid_after_utc < datetime.now(timezone.utc)


@pytest.mark.parametrize("mode", ["accepted", "always"])
def test_transfer_bodies_gzip(tmp_path, mode):
    data = os.urandom(3000) + b"a" * 100_000
    with sim_with(tmp_path, "--transfer-gzip", mode) as sim:
        (sim.root / "alpha/f").write_bytes(data)
        vi = ViCaller(sim)
        try:
            for accept, compressed in (("gzip, deflate", True), ("identity", mode == "always")):
                url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
                with httpx.Client(timeout=10) as http:
                    r = http.get(url.replace("*", "127.0.0.1", 1), headers={"Accept-Encoding": accept})
                assert r.status_code == 200
                if compressed:
                    assert r.headers["content-encoding"] == "gzip" and "content-length" not in r.headers
                    assert r.headers["transfer-encoding"] == "chunked"
                    assert len(r.content) == len(data) and r.content == data  # httpx decoded it
                else:
                    assert "content-encoding" not in r.headers and r.headers["content-length"] == str(len(data))
        finally:
            vi.close()
    assert gzip.decompress(gzip.compress(data)) == data


def test_star_without_a_port(tmp_path):
    with sim_with(tmp_path, "--no-transfer-port") as sim:
        (sim.root / "alpha/f").write_text("x")
        rest = RestCaller(sim)
        try:
            url = rest.fs("alpha", "", "create", spec={"path": "/f"}).json()
        finally:
            rest.close()
    assert url.startswith("http://*/guestFile?id=")


def test_old_vcenter_versions_lack_their_apis(tmp_path):
    with sim_with(tmp_path, "--vc-version", "7.0.1") as sim:
        with httpx.Client(base_url=sim.url, timeout=10) as http:
            assert http.get("/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/content").status_code == 404
        rest = RestCaller(sim)
        try:
            assert rest.http.get("/api/appliance/system/version").json()["version"] == "7.0.1.00000"
            r = rest.fs("alpha", "/files", "list", path="/")
            assert r.status_code == 404 and r.json()["error_type"] == "OPERATION_NOT_FOUND"
            assert rest.http.post("/api/vcenter/system", params={"action": "hello"},
                                  json={"api_releases": ["8.0.1.0"]}).status_code == 404
        finally:
            rest.close()
    with sim_with(tmp_path, "--vc-version", "8.0.0") as sim:
        with httpx.Client(base_url=sim.url, timeout=10) as http:
            assert http.get("/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/content").status_code == 404
        rest = RestCaller(sim)
        try:
            assert rest.fs("alpha", "/files", "list", path="/").status_code == 200
        finally:
            rest.close()


def test_rest_vm_list_limit_and_host_filter(tmp_path):
    with sim_with(tmp_path, "--rest-vm-limit", "2", "--hosts", HOSTS, vms=("a", "b", "c")) as sim:
        rest = RestCaller(sim, login=True)
        try:
            r = rest.http.get("/api/vcenter/vm")
            assert r.status_code == 500 and r.json()["error_type"] == "UNABLE_TO_ALLOCATE_RESOURCE"
            assert [v["name"] for v in rest.http.get("/api/vcenter/vm", params={"names": ["a", "c"]}).json()] == ["a", "c"]
            hosts = rest.http.get("/api/vcenter/host").json()
            assert [(h["host"], h["name"]) for h in hosts] == [("host-10", "esx01.sim.invalid"),
                                                               ("host-11", "esx02.sim.invalid")]
            by_host = {h["host"]: [v["name"] for v in rest.http.get("/api/vcenter/vm", params={"hosts": h["host"]}).json()]
                       for h in hosts}
            assert by_host == {"host-10": ["a", "c"], "host-11": ["b"]}
        finally:
            rest.close()


def _positions(vi: ViCaller, vm: str, path: str, page: int) -> list[tuple[list[str], int]]:
    """Every page from index 0 in steps of `page` positions: (names, remaining)."""
    out, index = [], 0
    while True:
        got = vi.guest("ListFilesInGuest", vm, filePath=path, index=index, maxResults=page).json()
        out.append(([f["path"] for f in got.get("files", [])], got["remaining"]))
        if got["remaining"] == 0:
            return out
        index += page


def test_skip_unreadable_leaves_entries_out_but_counts_them(tmp_path):
    with sim_with(tmp_path, "--skip-unreadable") as sim:
        d = sim.root / "alpha/d"
        d.mkdir()
        for i in range(6):
            (d / f"f{i}").write_text(str(i))
        order = os.listdir(d)
        for name in order[2:4]:
            os.chmod(d / name, 0)  # VI positions 4 and 5 (after . and ..)
        vi, rest = ViCaller(sim), RestCaller(sim)
        try:
            pages = _positions(vi, "alpha", "/d", 4)
            assert pages == [([".", "..", order[0], order[1]], 4), ([order[4], order[5]], 0)]
            got = rest.fs("alpha", "/files", "list", path="/d", iteration={"size": 3, "index": 0}).json()
            assert [f["filename"] for f in got["files"]] == order[:2] and got["status"] == "READY"
            assert got["total"] == 6 and got["end_index"] == 2
        finally:
            vi.close()
            rest.close()
    with sim_with(tmp_path) as sim:  # without the option a chmod-000 file lists like any other
        vi = ViCaller(sim)
        try:
            assert len(_positions(vi, "alpha", "/d", 100)[0][0]) == 8
        finally:
            vi.close()


def test_symlinks_list_with_their_targets_attributes(tmp_path):
    with sim_with(tmp_path) as sim:
        guest = sim.root / "alpha"
        (guest / "target").write_text("t")
        os.chmod(guest / "target", 0o640)
        os.utime(guest / "target", (1_600_000_000, 1_600_000_000))
        os.symlink("target", guest / "link")
        os.symlink("/target", guest / "abslink")  # resolved inside the guest
        os.symlink("nowhere", guest / "dangling")
        vi, rest = ViCaller(sim), RestCaller(sim)
        try:
            files = {f["path"]: f for f in vi.guest("ListFilesInGuest", "alpha", filePath="/").json()["files"]}
            for name in ("link", "abslink"):
                assert files[name]["type"] == "symlink"
                assert files[name]["attributes"]["permissions"] == 0o100640
                assert files[name]["attributes"]["modificationTime"] == "2020-09-13T12:26:40Z"
            dangling = files["dangling"]["attributes"]
            assert (dangling["permissions"], dangling["ownerId"], dangling["modificationTime"]) == (
                0, 0, "1970-01-01T00:00:00Z")
            assert dangling["symlinkTarget"] == "nowhere"
            got = rest.fs("alpha", "/files/%2Flink", "get").json()
            assert got["type"] == "SYMLINK" and got["attributes"]["posix_attributes"]["permissions"] == "640"
        finally:
            vi.close()
            rest.close()


def test_privileges_withheld_per_user(tmp_path):
    with sim_with(tmp_path) as sim:
        (sim.root / "alpha/f").write_text("x")
        vi, rest = ViCaller(sim), RestCaller(sim)
        try:
            sim.withhold("Modify")
            assert vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").status_code == 200
            r = vi.guest("InitiateFileTransferToGuest", "alpha", guestFilePath="/g", fileSize=1, overwrite=True,
                         fileAttributes={"_typeName": "GuestPosixFileAttributes"})
            assert r.status_code == 500 and r.json()["_typeName"] == "NoPermission"
            assert r.json()["privilegeId"] == "VirtualMachine.GuestOperations.Modify"
            r = rest.fs("alpha", "", "create", spec={"path": "/f"})  # a REST download needs Modify
            assert r.status_code == 403 and r.json()["error_type"] == "UNAUTHORIZED"
            assert rest.fs("alpha", "/files", "list", path="/").status_code == 200
            sim.withhold("VirtualMachine.GuestOperations.Query", user="someone-else@vsphere.local")
            sim.withhold("Query")  # replaces the set: Modify is back
            r = vi.guest("ListFilesInGuest", "alpha", filePath="/")
            assert r.json()["_typeName"] == "NoPermission"
            assert rest.fs("alpha", "", "create", spec={"path": "/f"}).status_code == 201
            sim.withhold()
            assert vi.guest("ListFilesInGuest", "alpha", filePath="/").status_code == 200
            with httpx.Client(base_url=sim.url, timeout=10) as http:
                assert http.post("/_sim/privileges", json={"withhold": ["Delete"]}).status_code == 400
        finally:
            vi.close()
            rest.close()


def test_session_ids_handed_out_again(tmp_path):
    with sim_with(tmp_path) as sim:
        vi = ViCaller(sim)
        try:
            old = vi.http.headers["vmware-api-session-id"]
            vi.vm_id("alpha")  # looked up before: the next answer with a body is the guest call's
            sim.rotate_sessions()
            r = vi.guest("ListFilesInGuest", "alpha", filePath="/")
            new = r.headers["vmware-api-session-id"]
            assert r.status_code == 200 and new != old
            assert vi.guest("ListFilesInGuest", "alpha", filePath="/").json()["_typeName"] == "NotAuthenticated"
            vi.http.headers["vmware-api-session-id"] = new
            r = vi.guest("ListFilesInGuest", "alpha", filePath="/")
            assert r.status_code == 200 and "vmware-api-session-id" not in r.headers
        finally:
            vi.close()


@pytest.mark.parametrize("form, shown", [("644", "640"), ("0644", "0640"), ("100644", "100640")])
def test_rest_permission_forms_and_millisecond_times(tmp_path, form, shown):
    with sim_with(tmp_path, "--rest-permissions", form) as sim:
        (sim.root / "alpha/f").write_text("x")
        os.chmod(sim.root / "alpha/f", 0o640)
        rest = RestCaller(sim)
        try:
            attrs = rest.fs("alpha", "/files/%2Ff", "get").json()["attributes"]
            assert attrs["posix_attributes"]["permissions"] == shown
            assert attrs["last_modified"].endswith(".000Z")
            assert rest.fs("alpha", "/files", "update", path="/f", file_attributes={
                "last_modified": "2021-01-02T03:04:05.000Z"}).status_code == 204
        finally:
            rest.close()
        assert os.stat(sim.root / "alpha/f").st_mtime == datetime(2021, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()
