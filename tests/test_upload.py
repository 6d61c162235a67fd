"""The PUT of an upload sent from the file by one worker thread (vsphere/upload.py), against the real simulator:
sendfile in large blocks over plain HTTP, the route's trust over TLS, progress, a source shorter than announced,
and a cancelled upload that cuts its connection."""

from __future__ import annotations

import errno
import io
import math
import os
import time

import pytest
import trio

from guestfs_mount.vsphere import upload
from guestfs_mount.vsphere.faults import TransferError
from guestfs_mount.vsphere.guestfiles import open_client
from tests.helpers.simulator import running_simulator
from tests.test_client import CREDS, config_for, vm_id

MiB = 1 << 20


def random_file(path, size: int):
    path.write_bytes(os.urandom(size))
    return path


async def test_a_put_goes_by_sendfile_in_large_blocks_and_reports_progress(sim, tmp_path, monkeypatch):
    size = 5 * upload.BLOCK + 3
    src = random_file(tmp_path / "src", size)
    calls = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd, in_fd, offset, count):
        calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    progress = []
    async with open_client(config_for(sim, "vi-json")) as client:
        vm = await vm_id(client)
        with trio.fail_after(60):
            await client.upload(vm, CREDS, "/big", str(src), size, progress=progress.append)
    assert (sim.root / "alpha/big").read_bytes() == src.read_bytes()
    # the body in blocks of 4 MiB, each one sendfile call (the kernel blocks until the block is sent): no hop per
    # slice of the socket's send buffer
    assert len(calls) == math.ceil(size / upload.BLOCK) and max(calls) == upload.BLOCK
    assert progress == sorted(progress) and progress[-1] == size and len(progress) == len(calls)


async def test_a_put_over_tls_trusts_what_the_route_trusts(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    size = 2 * upload.BLOCK + 12345
    src = random_file(tmp_path / "src", size)
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True) as sim:
        progress = []
        async with open_client(config_for(sim, "vi-json", ca_file=sim.ca_path)) as client:
            vm = await vm_id(client)
            with trio.fail_after(60):
                await client.upload(vm, CREDS, "/tls", open(src, "rb"), size, progress=progress.append)
        assert (root / "alpha/tls").read_bytes() == src.read_bytes()
        assert progress[-1] == size


async def test_an_in_memory_source_goes_through_httpx(sim, monkeypatch):
    """A file object with no descriptor (`check --write` uploads a BytesIO) has nothing to sendfile from."""
    data = os.urandom(3 * MiB + 5)
    calls = []
    monkeypatch.setattr(os, "sendfile", lambda *args: calls.append(args))
    async with open_client(config_for(sim, "vi-json")) as client:
        vm = await vm_id(client)
        await client.upload(vm, CREDS, "/mem", io.BytesIO(data), len(data))
    assert (sim.root / "alpha/mem").read_bytes() == data and not calls


async def test_a_source_shorter_than_announced_is_an_error_never_a_short_put(sim, tmp_path):
    src = random_file(tmp_path / "src", 1000)
    async with open_client(config_for(sim, "vi-json")) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        with pytest.raises(TransferError) as e:
            await client.upload(vm, CREDS, "/short", str(src), 5000)
    assert e.value.errno == errno.EIO and "the local file has 1000 bytes, not 5000" in str(e.value)
    assert not (sim.root / "alpha/short").exists()
    assert sim.stats().get("guestFile.PUT") == 1  # not retried: a new URL would not make the file longer


async def test_a_cancelled_put_cuts_its_connection_at_once(sim, tmp_path):
    """A PUT crawling at 1 MiB/s, cancelled after a second: it returns at once (its socket cut under the sending
    thread, which has ended by then), the guest keeps no partial file, and the next upload works."""
    size = 32 * MiB
    src = random_file(tmp_path / "src", size)
    async with open_client(config_for(sim, "vi-json")) as client:
        vm = await vm_id(client)
        sim.throttle("alpha", MiB)
        started = time.monotonic()
        with trio.move_on_after(1) as scope:
            await client.upload(vm, CREDS, "/slow", str(src), size)
        assert scope.cancelled_caught and time.monotonic() - started < 2.5
        sim.throttle("alpha", 0)
        with trio.fail_after(30):
            await client.upload(vm, CREDS, "/after", str(src), size)
    assert not (sim.root / "alpha/slow").exists()
    assert (sim.root / "alpha/after").stat().st_size == size
