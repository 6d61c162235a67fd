"""Downloads on a thread of their own (vsphere/download.py, `ReadTransfer.into`) against the real simulator and bad
servers over real sockets: the same bytes, renewals and errors as `chunks()`, over plain HTTP and pinned TLS; and the
in-memory ring readers are served from (fs/readbuffer.py)."""

from __future__ import annotations

import errno
import gzip
import os
import ssl
import threading

import pytest
import trio
import trustme

from guestfs_mount.fs.readbuffer import RecentBytes
from guestfs_mount.vsphere.faults import ConnectionFailed, ProtocolError, TransferError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig, Stopped, open_client
from guestfs_mount.vsphere.hosts import Route, fingerprint, resolve_star
from guestfs_mount.vsphere.model import GuestCredentials
from guestfs_mount.vsphere.transfer import HttpReadTransfer, TransferClients
from tests.helpers.badserver import Answer, bad_server
from tests.helpers.simulator import running_simulator
from tests.test_client import calls, config_for, host_fingerprint, vm_id

CREDS = GuestCredentials("root", "vmware")


class Collect:
    """A sink that keeps every byte (small bodies only), and notes the threads it was called on."""

    def __init__(self, slot: int = 64 << 10):
        self.data = bytearray()
        self._space = bytearray(slot)
        self.threads: set[int] = set()

    def buffer(self) -> memoryview:
        self.threads.add(threading.get_ident())
        return memoryview(self._space)

    def filled(self, n: int) -> None:
        self.data += self._space[:n]


async def read_into(transfer) -> bytes:
    sink = Collect()
    async with transfer:
        await transfer.into(sink)
    assert threading.get_ident() not in sink.threads or not sink.data  # the body was received off the event loop
    return bytes(sink.data)


def same_route(route):
    async def again():
        return route
    return again


@pytest.mark.parametrize("api", ["vi-json", "rest"])
async def test_into_reads_renews_once_and_fails_on_a_second_cut(sim, api):
    data = os.urandom(4 * 1024 * 1024 + 17)
    (sim.root / "alpha/big").write_bytes(data)
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        transfer = await client.open_read(vm, CREDS, "/big")
        assert await read_into(transfer) == data and transfer.size == len(data)
        sim.reset_stats()
        sim.fault("guestFile.GET", "SystemError", times=1)  # cut once: a new URL, the bytes already read skipped
        assert await read_into(await client.open_read(vm, CREDS, "/big")) == data
        assert calls(sim, "guestFile.GET") == {"guestFile.GET": 2}
        sim.fault("guestFile.GET", "SystemError", times=2)
        with pytest.raises(TransferError) as e:
            await read_into(await client.open_read(vm, CREDS, "/big"))
    assert e.value.errno == errno.EIO and "token=" not in str(e.value).replace("token=***", "")


async def test_into_over_tls_verifies_like_the_client_and_checks_the_pin(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    data = os.urandom(3 * 1024 * 1024)
    (root / "alpha/f").write_bytes(data)
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True) as sim:
        async with open_client(config_for(sim, "vi-json", ca_file=sim.ca_path)) as client:
            vm = await vm_id(client)
            assert await read_into(await client.open_read(vm, CREDS, "/f")) == data
        right = await host_fingerprint(sim)
        wrong = fingerprint(ssl.PEM_cert_to_DER_cert(
            trustme.CA().issue_cert("localhost").cert_chain_pems[0].bytes().decode()))
        clients = TransferClients(config_for(sim, "vi-json", ca_file=sim.ca_path))
        try:
            async with open_client(config_for(sim, "vi-json", ca_file=sim.ca_path)) as client:
                vm = await vm_id(client)
                first = await client.open_read(vm, CREDS, "/f")  # for a fresh transfer URL
                url = first._route.url
            route = Route(url, pin=wrong, host="esx01")
            with pytest.raises(ConnectionFailed) as e:
                await read_into(HttpReadTransfer(clients, route, same_route(route), len(data), None, "/f"))
            assert f"presented SHA-256 {right}" in str(e.value) and f"reports {wrong}" in str(e.value)
        finally:
            await clients.aclose()
        # no CA: the verification of the API connection refuses the host, as httpx would
        clients = TransferClients(ClientConfig(url=sim.url, username="u", password="p", timeout=5))
        try:
            route = Route(url, host="esx01")
            with pytest.raises(ConnectionFailed, match="certificate not trusted"):
                await read_into(HttpReadTransfer(clients, route, same_route(route), len(data), None, "/f"))
        finally:
            await clients.aclose()


async def test_into_a_content_length_lie_is_renewed_once_then_an_error():
    four_gib = 4 * 1024**3
    with bad_server({"/guestFile": Answer(200, b"x" * 1000, "application/octet-stream",
                                          content_length=four_gib)}) as server:
        clients = TransferClients(ClientConfig(url=server.url, username="u", password="p", timeout=5))
        route = Route(resolve_star("http://*/guestFile?id=1&token=t", server.url))
        renewals = []

        async def new_route():
            renewals.append(1)
            return route

        try:
            with trio.fail_after(20):
                with pytest.raises(TransferError, match="1000") as e:
                    await read_into(HttpReadTransfer(clients, route, new_route, four_gib, None, "/big"))
                # a length that is not the file's is refused at once
                transfer = HttpReadTransfer(clients, route, new_route, 1000, None, "/big")
                with pytest.raises(ProtocolError, match="announced"):
                    await read_into(transfer)
        finally:
            await clients.aclose()
    assert e.value.errno == errno.EIO and len(renewals) == 1


async def test_into_decodes_gzip_refuses_unknown_encodings_and_maps_statuses():
    body = os.urandom(300_000)
    answers = {"/gz": Answer(200, gzip.compress(body), "application/octet-stream",
                             headers=(("Content-Encoding", "gzip"),)),
               "/br": Answer(200, b"xx", "application/octet-stream", headers=(("Content-Encoding", "br"),)),
               "/bad": Answer(200, b"not gzip at all", "application/octet-stream",
                              headers=(("Content-Encoding", "gzip"),)),
               "/gone": Answer(404, b"", "text/html")}
    with bad_server(answers) as server:
        clients = TransferClients(ClientConfig(url=server.url, username="u", password="p", timeout=5))
        try:
            for size in (len(body), None):  # VI/JSON knows the size, REST learns it from the body
                route = Route(f"{server.url}/gz?id=1")
                transfer = HttpReadTransfer(clients, route, same_route(route), size, None, "/gz")
                assert await read_into(transfer) == body and transfer.size == len(body)
            route = Route(f"{server.url}/br?id=3")
            with pytest.raises(TransferError, match="Content-Encoding 'br'"):
                await read_into(HttpReadTransfer(clients, route, same_route(route), 2, None, "/br"))
            route = Route(f"{server.url}/bad?id=4")
            with pytest.raises(TransferError, match="damaged"):
                await read_into(HttpReadTransfer(clients, route, same_route(route), 10, None, "/bad"))
            route = Route(f"{server.url}/gone?id=5")
            with pytest.raises(TransferError, match="HTTP 404") as e:
                await read_into(HttpReadTransfer(clients, route, same_route(route), 10, None, "/gone"))
            assert "token" not in str(e.value) or "token=***" in str(e.value)
        finally:
            await clients.aclose()
    assert all(headers.get("accept-encoding") == "identity" for _, _, headers, _ in server.requests)


async def test_a_refused_connection_is_enotconn_and_a_cancelled_download_stops_its_thread(sim):
    clients = TransferClients(ClientConfig(url=sim.url, username="u", password="p", timeout=5))
    try:
        with socket_closed_port() as port:
            route = Route(f"http://127.0.0.1:{port}/guestFile?id=1&token=t", host="esx01")
            with pytest.raises(VSphereError) as e:
                await read_into(HttpReadTransfer(clients, route, same_route(route), 10, None, "/f"))
        assert e.value.errno == errno.ENOTCONN and "ESXi host esx01" in str(e.value)
    finally:
        await clients.aclose()
    # a slow download cancelled midway: into() returns at once, and nothing reaches the sink afterwards
    (sim.root / "alpha/slow").write_bytes(os.urandom(4 << 20))
    async with open_client(config_for(sim, "vi-json")) as client:
        vm = await vm_id(client)
        sim.throttle("alpha", 256 << 10)
        transfer = await client.open_read(vm, CREDS, "/slow")
        sink = Collect()
        with trio.move_on_after(1.0):
            async with transfer:
                await transfer.into(sink)
        kept = len(sink.data)
        await trio.sleep(0.5)
        assert 0 < kept < 4 << 20 and len(sink.data) == kept


class socket_closed_port:
    """A local port nobody listens on."""

    def __enter__(self) -> int:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc) -> None:
        pass


# ------------------------------------------------------------------------------------------- the ring
async def test_recent_bytes_serve_what_is_still_in_the_ring_and_nothing_after_stop(tmp_path):
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        woken = []
        ring = RecentBytes(fd, lambda: woken.append(1), ring=4096, slot=1024)
        data = os.urandom(10_000)
        pos = 0
        while pos < len(data):  # what a download's thread does
            space = ring.buffer()
            n = min(len(space), len(data) - pos, 700)  # receives shorter than the slot, crossing the ring's end
            space[:n] = data[pos:pos + n]
            ring.filled(n)
            pos += n
        assert ring.end == len(data) and os.pread(fd, 20_000, 0) == data
        assert ring.read(len(data) - 3000, len(data)) == data[-3000:]  # wraps around the ring's end
        assert ring.read(len(data) - 100, len(data) - 10) == data[-100:-10]
        assert ring.read(0, 100) is None  # overwritten long ago: the spool file has it
        # the slot about to be received into is no longer served, before a byte of it lands
        start = ring.start
        ring.buffer()
        assert ring.start > start and ring.read(start, start + 10) is None
        await trio.sleep(0.05)
        assert woken  # the event loop heard of the bytes
        ring.stop()
        with pytest.raises(Stopped):
            ring.filled(1)
        assert os.fstat(fd).st_size == len(data)
    finally:
        os.close(fd)


async def test_recent_bytes_keep_a_disk_error_for_the_spool(tmp_path):
    fd = os.open(tmp_path / "spool", os.O_RDONLY | os.O_CREAT, 0o600)  # writes fail: EBADF
    try:
        ring = RecentBytes(fd, lambda: None, ring=4096, slot=1024)
        ring.buffer()[:1] = b"x"
        with pytest.raises(Stopped):
            ring.filled(1)
        assert ring.error is not None and ring.error.errno == errno.EBADF and ring.end == 0
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- through the mount
@pytest.mark.parametrize("streamed", [False, True], ids=["filed", "streamed"])
def test_readers_through_a_tls_mount_get_every_byte_from_the_ring_and_the_spool(tmp_path, streamed):
    """The real path: TLS to the host, pinned to the certificate vCenter reports. One reader streams a file
    larger than the ring, a second one reads it backwards meanwhile (so bytes come from the ring and from the
    spool file), a third opens it after the download ended (the content cache's copy): all get the guest's bytes.
    Streamed (the file larger than what is filed whole): the backwards reader makes the mount read the start again."""
    import random
    import subprocess
    import sys

    from tests.helpers.mountfs import mount_guestfs

    root = tmp_path / "vms"
    (root / "vm1").mkdir(parents=True)
    data = os.urandom(24 * 1024 * 1024 + 4321)
    (root / "vm1/big").write_bytes(data)
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True) as sim:
        with mount_guestfs(sim, tmp_path, vcenter_config=f'ca_file = "{sim.ca_path}"\n',
                           cache_config="content_file_max_mib = 1\n" if streamed else "") as gm:
            backwards = subprocess.Popen(
                [sys.executable, "-c",
                 "import os, sys\n"
                 "fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; parts = []\n"
                 "for off in range((size - 1) // 65536 * 65536, -1, -65536):\n"
                 "    parts.append(os.pread(fd, 65536, off))\n"
                 "sys.stdout.buffer.write(b''.join(reversed(parts)))\n", str(gm.vm / "big")],
                stdout=subprocess.PIPE)
            streamed = subprocess.run(["cat", gm.vm / "big"], capture_output=True, timeout=120)
            out, _ = backwards.communicate(timeout=120)
            assert streamed.returncode == 0 and streamed.stdout == data
            assert backwards.returncode == 0 and out == data
            rng = random.Random(18)
            with open(gm.vm / "big", "rb") as f:
                for _ in range(20):
                    off = rng.randrange(len(data))
                    f.seek(off)
                    assert f.read(100_000) == data[off:off + 100_000], off
            log = gm.log()
    assert not [line for line in log.splitlines() if "download of" in line and "failed" in line], log[-2000:]


async def test_a_spool_is_whole_at_its_last_byte_and_then_reads_what_is_written(tmp_path):
    """The download's thread may be joined a while after the last byte landed: the spool is complete at once (a
    reader that closes then leaves its copy to the content cache), and a write made before the join is what reads
    see, not the ring's older bytes."""
    from guestfs_mount.fs.spool import Spool
    from guestfs_mount.fs.status import LiveTransfers
    from guestfs_mount.vsphere.guestfiles import ReadTransfer, put

    data = os.urandom(3 << 20)
    joined = trio.Event()

    class Landed(ReadTransfer):
        size, info = len(data), None

        def chunks(self):
            raise AssertionError("into() is used")

        async def into(self, sink):
            put(sink, data)
            await joined.wait()  # the thread not joined yet

        async def aclose(self):
            pass

    transfers = LiveTransfers()

    async def opener():
        return Landed(), transfers.start("vm1", "/f", "download", len(data))

    spool = Spool(tmp_path / "spool", "vm1/f")
    try:
        async with trio.open_nursery() as nursery:
            spool.start_download(nursery, opener)
            with trio.fail_after(10):
                await spool.wait_complete()
            assert spool.downloading and await spool.read(len(data) - 10, 10) == data[-10:]
            spool.write(len(data) - 10, b"0123456789")
            assert await spool.read(len(data) - 10, 10) == b"0123456789"
            joined.set()
        assert spool.complete and spool.error is None and not spool.downloading and len(transfers) == 0
        assert await spool.read(0, 100) == data[:100]
    finally:
        spool.close()
