"""The vSphere client against the real simulator over real sockets, the same tests for both dialects."""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import resource
import ssl

import httpx
import pytest
import trio
import trustme

from guestfs_mount.vsphere.faults import (
    AuthenticationError,
    ConnectionFailed,
    GuestFileError,
    GuestLoginError,
    ProtocolError,
    TransferError,
    VMUnavailableError,
)
from guestfs_mount.vsphere.guestfiles import ClientConfig, open_client
from guestfs_mount.vsphere.model import FileAttributes, FileType, GuestCredentials
from guestfs_mount.vsphere import transfer
from guestfs_mount.vsphere.hosts import Route, fingerprint, resolve_star
from guestfs_mount.vsphere.transfer import HttpReadTransfer, TransferClients, put_file
from tests.helpers.badserver import Answer, bad_server
from tests.helpers.simulator import running_simulator

CREDS = GuestCredentials("root", "vmware")


@pytest.fixture(params=["vi-json", "soap", "rest"])
def api(request):
    return request.param


def config_for(sim, api, **kw) -> ClientConfig:
    kw.setdefault("retries", 2)
    return ClientConfig(url=sim.url, username=sim.vc_user, password=sim.vc_password, api=api, **kw)


async def vm_id(client, name="alpha") -> str:
    return next(v.id for v in await client.list_vms() if v.name == name)


async def read_all(transfer) -> bytes:
    async with transfer:
        return b"".join([chunk async for chunk in transfer.chunks()])


def calls(sim, *names):
    stats = sim.stats()
    return {n: stats.get(n, 0) for n in names}


# ------------------------------------------------------------------------------------------- inventory
async def test_auto_picks_vi_json_and_lists_vms(sim):
    async with open_client(config_for(sim, "auto")) as client:
        assert client.dialect == "vi-json"
        vms = {v.name: v for v in await client.list_vms()}
    assert set(vms) == {"alpha", "beta"}
    assert vms["alpha"].powered_on and vms["alpha"].tools_ready and vms["alpha"].guest_family == "linuxGuest"
    assert vms["alpha"].id.startswith("vm-")


async def test_auto_falls_back_to_rest_when_vi_json_is_missing(sim):
    # a server with only /api: the bad server forwards nothing, so prove detection on the answer alone
    with bad_server({"/sdk/": Answer(404, b"<html>no</html>", "text/html"),
                     "/api/session": Answer(201, b'"tok-123"')}) as server:
        async with open_client(ClientConfig(url=server.url, username="u", password="p", api="auto")) as client:
            assert client.dialect == "rest"


async def test_power_state_and_tools_show_in_the_vm_list(sim, api):
    sim.power("beta", "poweredOff")
    sim.tools("alpha", False)
    async with open_client(config_for(sim, api)) as client:
        vms = {v.name: v for v in await client.list_vms()}
    assert vms["beta"].power_state == "poweredOff" and not vms["beta"].tools_ready
    assert vms["alpha"].powered_on and not vms["alpha"].tools_ready


# ------------------------------------------------------------------------------------------- files
async def test_upload_then_read_costs_one_initiate_and_one_transfer_each(sim, api, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src"
    src.write_bytes(data)
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        await client.upload(vm, CREDS, "/up.bin", str(src), len(data), FileAttributes(permissions=0o640))
        assert calls(sim, "InitiateFileTransferToGuest", "guestFile.PUT") == {
            "InitiateFileTransferToGuest": 1, "guestFile.PUT": 1}
        assert (sim.root / "alpha/up.bin").read_bytes() == data
        assert (sim.root / "alpha/up.bin").stat().st_mode & 0o777 == 0o640
        sim.reset_stats()
        transfer = await client.open_read(vm, CREDS, "/up.bin")
        assert await read_all(transfer) == data
        assert transfer.size == len(data)
        assert calls(sim, "InitiateFileTransferFromGuest", "guestFile.GET") == {
            "InitiateFileTransferFromGuest": 1, "guestFile.GET": 1}


async def test_zero_byte_files(sim, api, tmp_path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        await client.upload(vm, CREDS, "/empty", str(src), 0)
        assert (sim.root / "alpha/empty").read_bytes() == b""
        transfer = await client.open_read(vm, CREDS, "/empty")
        assert await read_all(transfer) == b""
        assert transfer.size == 0


async def test_upload_refuses_to_overwrite_unless_asked(sim, api, tmp_path):
    (sim.root / "alpha/exists").write_text("old")
    src = tmp_path / "new"
    src.write_text("new!")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        with pytest.raises(GuestFileError) as e:
            await client.upload(vm, CREDS, "/exists", str(src), 4, overwrite=False)
        assert e.value.errno == errno.EEXIST and e.value.path == "/exists"
        await client.upload(vm, CREDS, "/exists", open(src, "rb"), 4, overwrite=True)
    assert (sim.root / "alpha/exists").read_text() == "new!"


async def test_listing_pages_cost_ceil_n_over_page_calls(sim, api):
    d = sim.root / "alpha/many"
    d.mkdir()
    for i in range(7):
        (d / f"f{i}").write_text("x" * i)
    page = 3
    async with open_client(config_for(sim, api, list_page_size=page)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        entries = [e async for e in client.list_dir(vm, CREDS, "/many")]
    assert sorted(e.name for e in entries) == [f"f{i}" for i in range(7)]
    assert {e.name: e.size for e in entries}["f5"] == 5
    # the VI guest agent lists "." and ".." too (dropped by the client, in VI/JSON and SOAP alike); REST does not
    n = 7 + (2 if api != "rest" else 0)
    assert sim.stats().get("ListFilesInGuest") == math.ceil(n / page)


async def test_stat_file_directory_and_symlink(sim, api):
    (sim.root / "alpha/etc").mkdir()
    (sim.root / "alpha/etc/hosts").write_text("127.0.0.1 localhost\n")
    (sim.root / "alpha/etc/hosts").chmod(0o604)
    os.utime(sim.root / "alpha/etc/hosts", (1_600_000_000, 1_700_000_000))
    (sim.root / "alpha/link").symlink_to("/etc/hosts")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        f = await client.stat(vm, CREDS, "/etc/hosts")
        d = await client.stat(vm, CREDS, "/etc")
        link = await client.stat(vm, CREDS, "/link")
        with pytest.raises(GuestFileError) as missing:
            await client.stat(vm, CREDS, "/etc/nope")
    assert (f.name, f.type, f.size, f.permissions, f.mtime) == ("hosts", FileType.FILE, 20, 0o604, 1_700_000_000)
    assert (d.name, d.type) == ("etc", FileType.DIRECTORY)
    assert link.type is FileType.SYMLINK and link.symlink_target == "/etc/hosts"
    assert missing.value.errno == errno.ENOENT


async def test_directory_and_file_operations(sim, api):
    root = sim.root / "alpha"
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        await client.mkdir(vm, CREDS, "/a/b/c", parents=True)
        assert (root / "a/b/c").is_dir()
        assert (root / "a/b/c").stat().st_mode & 0o777 == 0o700  # like the real guest agent
        with pytest.raises(GuestFileError) as e:
            await client.mkdir(vm, CREDS, "/a")
        assert e.value.errno == errno.EEXIST
        (root / "a/f").write_text("f")
        (root / "a/g").write_text("g")
        with pytest.raises(GuestFileError) as e:
            await client.move_file(vm, CREDS, "/a/f", "/a/g", overwrite=False)
        assert e.value.errno == errno.EEXIST
        await client.move_file(vm, CREDS, "/a/f", "/a/g", overwrite=True)
        assert (root / "a/g").read_text() == "f" and not (root / "a/f").exists()
        await client.move_dir(vm, CREDS, "/a/b", "/a/moved")
        assert (root / "a/moved/c").is_dir()
        with pytest.raises(GuestFileError) as e:
            await client.remove_dir(vm, CREDS, "/a")
        assert e.value.errno == errno.ENOTEMPTY
        with pytest.raises(GuestFileError) as e:
            await client.remove_file(vm, CREDS, "/a/moved")
        assert e.value.errno == errno.EISDIR
        with pytest.raises(GuestFileError) as e:
            await client.remove_dir(vm, CREDS, "/a/g")
        assert e.value.errno == errno.ENOTDIR
        await client.set_attributes(vm, CREDS, "/a/g", FileAttributes(permissions=0o751, uid=1000, gid=1001,
                                                                       mtime=1_500_000_000, atime=1_500_000_100))
        st = (root / "a/g").stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid, st.st_mtime, st.st_atime) == (
            0o751, 1000, 1001, 1_500_000_000, 1_500_000_100)
        await client.remove_file(vm, CREDS, "/a/g")
        await client.remove_dir(vm, CREDS, "/a", recursive=True)
        assert not (root / "a").exists()
        tmp_file = await client.make_temp(vm, CREDS, prefix="pre-", suffix=".tmp", directory="/")
        tmp_dir = await client.make_temp(vm, CREDS, prefix="d-", directory="/", is_dir=True)
    assert (root / tmp_file.lstrip("/")).is_file() and tmp_file.endswith(".tmp")
    assert (root / tmp_dir.lstrip("/")).is_dir()


async def test_list_dir_of_a_file_is_enotdir(sim, api):
    (sim.root / "alpha/plain").write_text("x")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        with pytest.raises(GuestFileError) as e:
            [x async for x in client.list_dir(vm, CREDS, "/plain")]
    assert e.value.errno == errno.ENOTDIR


# ------------------------------------------------------------------------------------------- faults
FAULTS = [
    ("FileNotFound", errno.ENOENT, GuestFileError),
    ("FileAlreadyExists", errno.EEXIST, GuestFileError),
    ("NotAFile", errno.EISDIR, GuestFileError),
    ("NotADirectory", errno.ENOTDIR, GuestFileError),
    ("DirectoryNotEmpty", errno.ENOTEMPTY, GuestFileError),
    ("FileNameTooLong", errno.ENAMETOOLONG, GuestFileError),
    ("NoDiskSpace", errno.ENOSPC, GuestFileError),
    ("GuestPermissionDenied", errno.EACCES, GuestFileError),
    ("InvalidGuestLogin", errno.EACCES, GuestLoginError),
    ("InvalidPowerState", errno.EHOSTDOWN, VMUnavailableError),
    ("InvalidArgument", errno.EINVAL, GuestFileError),
]


@pytest.mark.parametrize("fault, expected_errno, kind", FAULTS, ids=[f[0] for f in FAULTS])
async def test_guest_faults_map_to_errno(sim, api, fault, expected_errno, kind):
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.fault("MakeDirectoryInGuest", fault, times=1)
        with pytest.raises(kind) as e:
            await client.mkdir(vm, CREDS, "/newdir")
        assert e.value.errno == expected_errno
        assert e.value.path == "/newdir" and e.value.vm == vm
        await client.mkdir(vm, CREDS, "/newdir")  # the fault is gone: the next call works
    assert (sim.root / "alpha/newdir").is_dir()


@pytest.mark.parametrize("fault, final_errno", [("TaskInProgress", errno.EBUSY), ("TooManyGuestLogons", errno.EAGAIN),
                                                ("GuestOperationsUnavailable", errno.EHOSTDOWN)])
async def test_busy_faults_are_retried_then_given_up(sim, api, fault, final_errno):
    (sim.root / "alpha/f").write_text("x")
    async with open_client(config_for(sim, api, retries=2)) as client:
        vm = await vm_id(client)
        sim.fault("ListFilesInGuest", fault, times=2)
        sim.reset_stats()
        assert (await client.stat(vm, CREDS, "/f")).size == 1  # two failures, then success
        assert sim.stats()["ListFilesInGuest"] == 3
        sim.fault("ListFilesInGuest", fault, times=5)
        with trio.fail_after(20):
            with pytest.raises(GuestFileError) as e:
                await client.stat(vm, CREDS, "/f")
    # REST knows TooManyGuestLogons only as RESOURCE_BUSY
    expected = errno.EBUSY if api == "rest" and fault == "TooManyGuestLogons" else final_errno
    assert e.value.errno == expected


async def test_powered_off_vm_gives_ehostdown(sim, api):
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client, "beta")
        sim.power("beta", "poweredOff")
        with pytest.raises(VMUnavailableError) as e:
            await client.stat(vm, CREDS, "/")
    assert e.value.errno == errno.EHOSTDOWN


async def test_session_expiry_is_a_silent_relogin(sim, api):
    (sim.root / "alpha/f").write_text("x")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        sim.expire_sessions()
        assert (await client.stat(vm, CREDS, "/f")).size == 1
        sim.expire_sessions()
        assert len(await client.list_vms()) == 2
    assert sim.stats()["Login"] == 2


async def test_wrong_vcenter_password_is_an_authentication_error(sim, api):
    with pytest.raises(AuthenticationError) as e:
        async with open_client(ClientConfig(url=sim.url, username=sim.vc_user, password="wrong", api=api)):
            pass
    assert e.value.errno == errno.EACCES and "wrong" not in str(e.value)


# ------------------------------------------------------------------------------------------- transfers
async def test_a_failed_put_is_retried_with_a_new_url(sim, api, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"z" * 100_000)
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        sim.fault("guestFile.PUT", "SystemError", times=1)
        await client.upload(vm, CREDS, "/z", str(src), 100_000)
        assert calls(sim, "InitiateFileTransferToGuest", "guestFile.PUT") == {
            "InitiateFileTransferToGuest": 2, "guestFile.PUT": 2}
        sim.fault("guestFile.PUT", "SystemError", times=2)
        with pytest.raises(TransferError):
            await client.upload(vm, CREDS, "/z2", str(src), 100_000)
    assert (sim.root / "alpha/z").read_bytes() == src.read_bytes()
    assert not (sim.root / "alpha/z2").exists()  # nothing half-written


async def test_a_download_cut_midway_is_an_error_not_a_short_file(sim, api):
    data = os.urandom(4 * 1024 * 1024)
    (sim.root / "alpha/big").write_bytes(data)
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        sim.fault("guestFile.GET", "SystemError", times=1)  # cut once: a new URL, the bytes already read skipped
        assert await read_all(await client.open_read(vm, CREDS, "/big")) == data
        assert calls(sim, "InitiateFileTransferFromGuest", "guestFile.GET") == {
            "InitiateFileTransferFromGuest": 2, "guestFile.GET": 2}
        sim.fault("guestFile.GET", "SystemError", times=2)  # cut on both tries: an error
        transfer = await client.open_read(vm, CREDS, "/big")
        with pytest.raises(TransferError) as e:
            await read_all(transfer)
    assert e.value.errno == errno.EIO and "token=" not in str(e.value).replace("token=***", "")


async def test_200_mib_round_trip_streams_in_flat_memory(sim, api, tmp_path):
    size = 200 * 1024 * 1024
    src = tmp_path / "big"
    with open(src, "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(200):
            f.write(block)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        with trio.fail_after(120):
            await client.upload(vm, CREDS, "/big", str(src), size)
            transfer = await client.open_read(vm, CREDS, "/big")
            h = hashlib.sha256()
            biggest = 0
            async with transfer:
                async for chunk in transfer.chunks():
                    h.update(chunk)
                    biggest = max(biggest, len(chunk))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert h.hexdigest() == digest
    assert hashlib.sha256((sim.root / "alpha/big").read_bytes()).hexdigest() == digest
    assert biggest <= 4 * 1024 * 1024
    assert grown_mib < 64, f"the test process grew by {grown_mib:.0f} MiB"


# ------------------------------------------------------------------------------------------- TLS
@pytest.fixture
def tls_sim(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True) as simulator:
        yield simulator


async def test_tls_verified_with_the_ca_and_transfers_pinned(tls_sim, api, tmp_path):
    (tls_sim.root / "alpha/f").write_text("over tls")
    async with open_client(config_for(tls_sim, api, ca_file=tls_sim.ca_path)) as client:
        vm = await vm_id(client)
        assert await read_all(await client.open_read(vm, CREDS, "/f")) == b"over tls"


async def test_tls_without_the_ca_is_refused(tls_sim, api):
    with pytest.raises(ConnectionFailed) as e:
        async with open_client(config_for(tls_sim, api)):
            pass
    assert "certificate" in str(e.value).lower()


async def test_insecure_works_and_says_so_loudly(tls_sim, api, caplog):
    (tls_sim.root / "alpha/f").write_text("x")
    with caplog.at_level(logging.WARNING):
        async with open_client(config_for(tls_sim, api, insecure=True)) as client:
            vm = await vm_id(client)
            assert await read_all(await client.open_read(vm, CREDS, "/f")) == b"x"
    assert "TLS verification is OFF" in caplog.text


async def test_a_transfer_to_a_host_with_another_certificate_is_refused(tls_sim, tmp_path):
    """A pinned client accepts exactly the certificate vCenter reports for the host (by SHA-256), whatever CA signed
    another; the refusal names both fingerprints and happens before any HTTP byte."""
    wrong = trustme.CA().issue_cert("localhost", "127.0.0.1").cert_chain_pems[0].bytes().decode()
    config = config_for(tls_sim, "vi-json", ca_file=tls_sim.ca_path)
    clients = TransferClients(config)
    url = f"{tls_sim.url}/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/content"
    right = await host_fingerprint(tls_sim)
    try:
        with pytest.raises(httpx.ConnectError) as e:
            await clients.get(fingerprint(ssl.PEM_cert_to_DER_cert(wrong))).get(url)
        assert f"reports {fingerprint(ssl.PEM_cert_to_DER_cert(wrong))}" in str(e.value)
        assert f"presented SHA-256 {right}" in str(e.value)
        response = await clients.get(right).get(url)
        assert response.status_code == 200
    finally:
        await clients.aclose()


async def host_fingerprint(sim) -> str:
    """The SHA-256 of the simulator's host certificate as the VI inventory gives it."""
    async with open_client(config_for(sim, "vi-json", ca_file=sim.ca_path)) as client:
        vm = await vm_id(client)
        # the simulator's one host is named localhost: a URL naming it is pinned to its certificate
        return (await client.route(vm, "https://localhost:1/guestFile?id=1&token=t")).pin


# ------------------------------------------------------------------------------------------- bad servers
@pytest.mark.parametrize("answer, words", [
    (Answer(200, b"<html><body>Service Unavailable</body></html>", "text/html"), "not JSON"),
    (Answer(200, b'{"_typeName": "ServiceContent", "rootFo'), "not JSON"),
    (Answer(200, b'{"_typeName": "ServiceContent", "sessionManager": 42}'), "sessionManager"),
    (Answer(200, b"[1, 2, 3]"), "ServiceContent"),
])
async def test_nonsense_from_vcenter_is_a_clear_protocol_error(answer, words):
    with bad_server({"/sdk/": answer}) as server:
        with pytest.raises(ProtocolError) as e:
            async with open_client(ClientConfig(url=server.url, username="u", password="p", api="vi-json")):
                pass
    assert words in str(e.value) and e.value.errno == errno.EIO


async def test_rest_login_answering_html_is_a_protocol_error():
    with bad_server({"/api/session": Answer(201, b"<html>login page</html>", "text/html")}) as server:
        with pytest.raises(ProtocolError):
            async with open_client(ClientConfig(url=server.url, username="u", password="p", api="rest")):
                pass


async def test_a_content_length_lie_ends_in_an_error_without_memory_growth():
    four_gib = 4 * 1024**3
    with bad_server({"/guestFile": Answer(200, b"x" * 1000, "application/octet-stream",
                                          content_length=four_gib)}) as server:
        config = ClientConfig(url=server.url, username="u", password="p", timeout=5)
        clients = TransferClients(config)

        route = Route(resolve_star("http://*/guestFile?id=1&token=t", server.url))
        renewals = []

        async def new_route():  # a download cut midway is renewed once; the lie then comes again
            renewals.append(1)
            return route

        transfer = HttpReadTransfer(clients, route, new_route, four_gib, None, "/big")
        try:
            with trio.fail_after(20):
                with pytest.raises(TransferError) as e:
                    await read_all(transfer)
        finally:
            await clients.aclose()
    assert "1000" in str(e.value) and len(renewals) == 1


async def test_put_sends_an_exact_content_length_and_is_never_chunked(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(2 * transfer.CHUNK + 7))  # more than one read chunk
    with bad_server({"/guestFile": Answer(200, b"")}) as server:
        clients = TransferClients(ClientConfig(url=server.url, username="u", password="p", timeout=5))

        async def no_new_url():
            raise AssertionError("the PUT succeeded, so no new URL may be asked for")

        try:
            with trio.fail_after(20):
                await put_file(clients, Route(f"{server.url}/guestFile?id=1&token=t"), no_new_url, src,
                               src.stat().st_size, None, "/src")
        finally:
            await clients.aclose()
    [(method, _, headers, received)] = server.requests
    assert method == "PUT"
    assert headers.get("content-length") == str(src.stat().st_size) == str(received)
    assert "transfer-encoding" not in headers
    assert headers.get("connection") == "close"


async def test_unreachable_vcenter_fails_fast_with_enotconn():
    with trio.fail_after(15):
        with pytest.raises(ConnectionFailed) as e:
            async with open_client(ClientConfig(url="http://127.0.0.1:9", username="u", password="p",
                                                api="vi-json", connect_timeout=2)):
                pass
    assert e.value.errno == errno.ENOTCONN


async def test_a_hung_vcenter_times_out():
    with bad_server(default=Answer(200, b"{}", hang=10)) as server:
        with trio.fail_after(15):
            with pytest.raises(ConnectionFailed) as e:
                async with open_client(ClientConfig(url=server.url, username="u", password="p", api="vi-json",
                                                    timeout=1)):
                    pass
    assert e.value.errno == errno.ETIMEDOUT


async def test_secrets_never_reach_logs_or_errors(tmp_path, caplog, api):
    vc_password, guest_password = "Vc-S3cret-4711", "Guest-S3cret-0815"
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha/f").write_text("x")
    args = ["--vc-password", vc_password, "--guest-password", guest_password]
    errors = []
    with running_simulator(root, log_path=tmp_path / "sim.log", extra_args=args) as sim, \
            caplog.at_level(logging.DEBUG):
        async with open_client(config_for(sim, api)) as client:
            vm = await vm_id(client)
            token = client._token
            sim.expire_sessions()
            good = GuestCredentials("root", guest_password)
            assert await read_all(await client.open_read(vm, good, "/f")) == b"x"
            try:
                await client.stat(vm, GuestCredentials("root", guest_password + "-wrong"), "/f")
            except GuestLoginError as e:
                errors.append(str(e))
            new_token = client._token
    # our own log lines (httpx's request lines pass the product's redacting filter: see test_logsetup)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("guestfs_mount"))
    text = ours + "\n".join(errors) + (tmp_path / "sim.log").read_text()
    assert errors
    for secret in (vc_password, guest_password, token, new_token):
        assert secret.strip('"') not in text  # a SOAP session is a cookie value, sent quoted
