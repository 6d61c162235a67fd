"""The client's handling of real vCenters in the field (issue 16), at the client's level: what a transfer URL
becomes (host, address, TLS name, pin) for each `transfer_host`, re-learning a VM's host, retrying a failed
lookup, tolerant decoding of certificates, management addresses, times and permissions, listings whose pages
skip entries, and transfer bodies that come compressed anyway."""

from __future__ import annotations

import errno
import gzip
import os
import ssl

import pytest
import trio
import trustme

from guestfs_mount.vsphere.base import as_link, format_time, paged_listing, parse_time
from guestfs_mount.vsphere.faults import ProtocolError, TransferError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig, open_client
from guestfs_mount.vsphere.hosts import EsxiHosts, Route, certificate_der, fingerprint, management_ips
from guestfs_mount.vsphere.model import FileType, GuestCredentials, GuestFileInfo
from guestfs_mount.vsphere.transfer import HttpReadTransfer, TransferClients
from tests.helpers.badserver import Answer, bad_server
from tests.helpers.simulator import running_simulator

CERT = trustme.CA().issue_cert("esx01.example").cert_chain_pems[0].bytes().decode()
DER = ssl.PEM_cert_to_DER_cert(CERT)
OTHER = ssl.PEM_cert_to_DER_cert(trustme.CA().issue_cert("esx02.example").cert_chain_pems[0].bytes().decode())
KEY = "management.key-vim.host.VirtualNic-vmk0"


def net_config(*ips: str) -> list[dict]:
    vnics = [{"key": f"{KEY}{i}", "device": f"vmk{i}", "spec": {"ip": {"ipAddress": ip}}} for i, ip in enumerate(ips)]
    return [{"nicType": "management", "candidateVnic": vnics, "selectedVnic": [v["key"] for v in vnics]},
            {"nicType": "vmotion", "candidateVnic": [{"key": "v", "spec": {"ip": {"ipAddress": "10.9.9.9"}}}],
             "selectedVnic": ["v"]}]


class FakeVCenter:
    """A PropertyReader over a dict inventory; counts reads and can fail the next ones."""

    def __init__(self):
        self.vm_host = {"vm-1": "host-10"}
        self.hosts = {
            "host-10": {"name": "esx01.example", "config.certificate": [b - 256 if b > 127 else b for b in CERT.encode()],
                        "config.virtualNicManagerInfo.netConfig": net_config("10.0.0.1")},
            "host-11": {"name": "esx02.example", "config.certificate": OTHER,
                        "config.virtualNicManagerInfo.netConfig": net_config("10.0.0.2", "10.0.1.2")},
        }
        self.reads: list[tuple[str, str]] = []
        self.fail = 0

    async def __call__(self, mo_type, mo_id, paths):
        self.reads.append((mo_type, mo_id))
        if self.fail:
            self.fail -= 1
            raise ProtocolError("vCenter hiccup")
        if mo_type == "VirtualMachine":
            return {"runtime.host": {"_typeName": "ManagedObjectReference", "type": "HostSystem",
                                     "value": self.vm_host[mo_id]}}
        return {k: v for k, v in self.hosts[mo_id].items() if k in paths}


API = "https://vc.example:8443"
URL = "https://esx01.example:443/guestFile?id=1&token=t"


async def test_routes_by_policy_keep_the_pin_on_the_host():
    vc = FakeVCenter()
    management = await EsxiHosts(API, "management-ip", vc).route("vm-1", URL)
    assert management == Route("https://10.0.0.1:443/guestFile?id=1&token=t", sni="esx01.example",
                               pin=fingerprint(DER), host="esx01.example (host-10)", host_id="host-10")
    by_name = await EsxiHosts(API, "name", vc).route("vm-1", URL)
    assert (by_name.url, by_name.sni, by_name.pin) == (URL, None, fingerprint(DER))
    via_vcenter = await EsxiHosts(API, "vcenter", vc).route("vm-1", URL)
    assert (via_vcenter.url, via_vcenter.sni, via_vcenter.pin) == (
        "https://vc.example:8443/guestFile?id=1&token=t", "esx01.example", fingerprint(DER))
    # `*`: the API connection's host and port, verified as it is
    star = await EsxiHosts(API, "management-ip", vc).route("vm-1", "https://*/guestFile?id=2&token=t")
    assert (star.url, star.pin, star.sni) == ("https://vc.example:8443/guestFile?id=2&token=t", None, None)
    star = await EsxiHosts("https://[::1]", "management-ip", vc).route("vm-1", "https://*:443/guestFile?id=2")
    assert star.url == "https://[::1]/guestFile?id=2"
    # no reader (REST alone): by name, verified like vCenter
    assert await EsxiHosts(API, "management-ip", None).route("vm-1", URL) == Route(URL, host="esx01.example")


async def test_a_url_naming_another_host_relearns_the_vms_host_and_several_addresses_keep_the_name():
    vc = FakeVCenter()
    hosts = EsxiHosts(API, "management-ip", vc)
    hosts.note_vm_host("vm-1", "host-10")
    await hosts.route("vm-1", URL)
    assert vc.reads == [("HostSystem", "host-10")]  # the listing's guess was right: one read
    await hosts.route("vm-1", URL)
    assert len(vc.reads) == 1  # known by name now
    vc.vm_host["vm-1"] = "host-11"  # vMotion
    moved = await hosts.route("vm-1", "https://esx02.example/guestFile?id=3")
    assert vc.reads[1:] == [("VirtualMachine", "vm-1"), ("HostSystem", "host-11")]
    # two management addresses: which one routes is unknown, so the name is kept (govmomi does the same)
    assert (moved.url, moved.pin, moved.sni) == ("https://esx02.example/guestFile?id=3", fingerprint(OTHER), None)


async def test_a_failed_lookup_is_retried_at_the_next_transfer(caplog):
    vc = FakeVCenter()
    hosts = EsxiHosts(API, "management-ip", vc)
    vc.fail = 1
    first = await hosts.route("vm-1", URL)
    assert (first.url, first.pin) == (URL, None)  # by name, verified like vCenter: never unverified
    assert "cannot learn ESXi host esx01.example of VM vm-1" in caplog.text
    second = await hosts.route("vm-1", URL)
    assert second.pin == fingerprint(DER) and second.url.startswith("https://10.0.0.1:443/")
    hosts.forget("host-10")  # a refused certificate: read again at the next transfer
    await hosts.route("vm-1", URL)
    assert vc.reads.count(("HostSystem", "host-10")) == 2


async def test_concurrent_transfers_share_one_lookup():
    vc = FakeVCenter()
    hosts = EsxiHosts(API, "management-ip", vc)
    routes = []

    async def transfer():
        routes.append(await hosts.route("vm-1", URL))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(transfer)
    assert len(routes) == 5 and all(r.pin == fingerprint(DER) for r in routes)
    assert vc.reads == [("VirtualMachine", "vm-1"), ("HostSystem", "host-10")]


def test_certificates_and_management_addresses_decode_tolerantly():
    signed = [b - 256 if b > 127 else b for b in CERT.encode()]
    import base64

    for form in (signed, CERT.encode(), CERT, base64.b64encode(CERT.encode()).decode(), DER):
        assert certificate_der(form) == DER
    for junk in (None, [], "not base64 !", b"garbage", 42):
        assert certificate_der(junk) is None
    assert management_ips(net_config("10.0.0.1")) == ("10.0.0.1",)
    objects = [{"nicType": "management", "candidateVnic": [{"key": "k", "spec": {"ip": {"ipAddress": "10.0.0.7"}}}],
                "selectedVnic": [{"key": "k"}]}]  # selectedVnic as objects (the generated VI/JSON model's form)
    assert management_ips(objects) == ("10.0.0.7",)
    assert management_ips([{"nicType": "management", "candidateVnic": [{"key": "k"}], "selectedVnic": []}]) == ()
    assert management_ips(None) == ()


def test_times_permissions_and_links_parse_tolerantly():
    whole = parse_time("2024-05-01T10:00:00Z", "t")
    for text in ("2024-05-01T10:00:00.000Z", "2024-05-01T10:00:00.000+00:00", "2024-05-01T12:00:00+02:00",
                 "2024-05-01T10:00:00.0000000Z", "2024-05-01T10:00:00"):
        assert parse_time(text, "t") == whole, text
    assert format_time(whole) == "2024-05-01T10:00:00Z"
    assert format_time(whole + 0.9, millis=True) == "2024-05-01T10:00:00.000Z"
    link = GuestFileInfo("l", FileType.SYMLINK, 0, 0o644, 0, 0, 0.0, 0.0, "../target")
    assert (as_link(link).permissions, as_link(link).size) == (0o777, 9)
    plain = GuestFileInfo("f", FileType.FILE, 3, 0o600)
    assert as_link(plain) is plain


@pytest.mark.parametrize("form", ["644", "0644", "100644", 644])
async def test_rest_permission_forms(form):
    from guestfs_mount.vsphere.rest import RestClient

    record = {"type": "FILE", "size": 1, "attributes": {"posix_attributes": {"owner": 0, "group": 0,
                                                                            "permissions": form}}}
    assert RestClient._info(None, record, "f").permissions == 0o644


async def test_paged_listing_drops_repeats_and_passes_empty_pages():
    def e(name):
        return GuestFileInfo(name, FileType.FILE)

    # the agent's answers for page size 4 when positions 2 and 4..7 cannot be read: (index -> entries, remaining)
    layout = [".", "..", None, "a", None, None, None, None, "b", "c", "d"]
    asked = []

    async def fetch(index):
        asked.append(index)
        page = layout[index:index + 4]
        return [e(n) for n in page if n], max(0, len(layout) - index - len(page))

    names = [i.name async for i in paged_listing(fetch, 4, "/d")]
    assert names == ["a", "b", "c", "d"] and asked == [0, 3, 4, 8]  # 3: "a" again; 4: nothing shown, on to 8

    async def stuck(index):
        return [], 5

    with pytest.raises(ProtocolError, match="does not advance"):
        [i async for i in paged_listing(stuck, 4, "/d")]


async def test_transfers_ask_for_identity_and_refuse_unknown_encodings():
    body = os.urandom(5000)
    answers = {"/gz": Answer(200, gzip.compress(body), "application/octet-stream", headers=(("Content-Encoding", "gzip"),)),
               "/br": Answer(200, b"xx", "application/octet-stream", headers=(("Content-Encoding", "br"),))}
    with bad_server(answers) as server:
        clients = TransferClients(ClientConfig(url=server.url, username="u", password="p", timeout=5))
        try:
            async def same(route):
                async def again():
                    return route
                return again

            route = Route(f"{server.url}/gz?id=1")
            transfer = HttpReadTransfer(clients, route, await same(route), len(body), None, "/gz")
            async with transfer:
                got = b"".join([c async for c in transfer.chunks()])
            assert got == body and transfer.size == len(body)
            route = Route(f"{server.url}/gz?id=2")
            transfer = HttpReadTransfer(clients, route, await same(route), None, None, "/gz")  # REST: size unknown
            async with transfer:
                assert b"".join([c async for c in transfer.chunks()]) == body and transfer.size == len(body)
            route = Route(f"{server.url}/br?id=3")
            with pytest.raises(TransferError, match="Content-Encoding 'br'") as error:
                async with HttpReadTransfer(clients, route, await same(route), 2, None, "/br") as transfer:
                    [c async for c in transfer.chunks()]
            assert error.value.errno == errno.EIO
        finally:
            await clients.aclose()
    assert all(headers.get("accept-encoding") == "identity" for _, _, headers, _ in server.requests)


async def test_an_unresolvable_host_name_is_named_in_the_error(tmp_path):
    """transfer_host = "name" with a host name that does not resolve: the error names the host and what to do."""
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha/f").write_text("x")
    with running_simulator(root, log_path=tmp_path / "sim.log",
                           extra_args=["--hosts", "esx01.sim.invalid=127.0.0.11"]) as sim:
        for policy, works in (("name", False), ("management-ip", True)):
            config = ClientConfig(url=sim.url, username=sim.vc_user, password=sim.vc_password, api="vi-json",
                                  transfer_host=policy)
            async with open_client(config) as client:
                vm = next(v.id for v in await client.list_vms() if v.name == "alpha")
                transfer = await client.open_read(vm, GuestCredentials("root", "vmware"), "/f")
                if works:
                    async with transfer:
                        assert b"".join([c async for c in transfer.chunks()]) == b"x"
                    continue
                with pytest.raises(VSphereError) as error:
                    async with transfer:
                        [c async for c in transfer.chunks()]
    assert error.value.errno == errno.ENOTCONN
    assert "ESXi host esx01.sim.invalid (host-10) at esx01.sim.invalid:" in str(error.value)
    assert "does not resolve from here" in str(error.value) and "management-ip" in str(error.value)


def test_a_missing_privilege_is_named():
    from guestfs_mount.vsphere.faultmap import rest_error, vi_fault_error

    body = {"_typeName": "NoPermission", "privilegeId": "VirtualMachine.GuestOperations.Query",
            "missingPrivileges": [{"entity": {"type": "VirtualMachine", "value": "vm-1"},
                                   "privilegeIds": ["VirtualMachine.GuestOperations.Query",
                                                    "VirtualMachine.GuestOperations.Modify"]}],
            "faultMessage": [{"message": "Permission to perform this operation was denied."}]}
    error = vi_fault_error(body, path="/f", vm="vm-1")
    assert error.errno == errno.EACCES
    assert str(error) == ("NoPermission (/f): Permission to perform this operation was denied; the vCenter user "
                          "lacks VirtualMachine.GuestOperations.Query, VirtualMachine.GuestOperations.Modify on this VM")
    assert rest_error(403, {"error_type": "UNAUTHORIZED"}).errno == errno.EACCES
