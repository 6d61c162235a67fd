"""Large files read straight through are streamed: served from the download's ring, never written to the spool
file (spool.py, readbuffer.py). What needs bytes the ring has dropped (a reader going back, a writer) gets them from
a second transfer; the download keeps pace with its reader, and files the rest when the reader goes idle.

Unit tests drive a `Spool` with a transfer whose body a thread of its own puts into the sink (as download.py's
does); the mount tests run the real mount against the simulator.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import sys
import threading

import pyfuse3
import pytest
import trio

from guestfs_mount.fs.readbuffer import IDLE
from guestfs_mount.fs.spool import Spool
from guestfs_mount.fs.status import LiveTransfers
from guestfs_mount.vsphere.guestfiles import ReadTransfer, put
from guestfs_mount.vsphere.model import FileType, GuestFileInfo

RING = 64 << 10
LIMIT = 128 << 10  # files up to this are filed whole


def _info(size: int, mtime: float) -> GuestFileInfo:
    return GuestFileInfo(name="f", type=FileType.FILE, size=size, mtime=mtime)


class Guest:
    """The guest file and the transfers opened of it (each one's body put by a thread, in pieces of `piece`)."""

    def __init__(self, data: bytes, piece: int = 4096):
        self.data, self.mtime, self.piece = data, 1000.0, piece
        self.opened = 0
        self.transfers = LiveTransfers()

    async def opener(self):
        self.opened += 1
        guest = self
        data, mtime = self.data, self.mtime

        class Transfer(ReadTransfer):
            size, info = len(data), _info(len(data), mtime)

            def chunks(self):
                raise AssertionError("into() is used")

            async def into(self, sink):
                def body():
                    for off in range(0, len(data), guest.piece):
                        put(sink, data[off:off + guest.piece])
                try:
                    await trio.to_thread.run_sync(body, abandon_on_cancel=True)
                except Exception as e:  # Stopped: the sink wants no more
                    if type(e).__name__ != "Stopped":
                        raise

            async def aclose(self):
                pass

        return Transfer(), self.transfers.start("vm1", "/f", "download", len(data))


async def _read_all(spool: Spool, size: int, step: int = 8192) -> bytes:
    parts, off = [], 0
    while True:
        with trio.fail_after(20):
            part = await spool.read(off, step)
        if not part:
            return b"".join(parts)
        parts.append(bytes(part))  # a lent view of the ring is good until the next read: copy it, as pyfuse3 does
        off += len(part)


@contextlib.asynccontextmanager
async def downloading(tmp_path, data: bytes):
    """A spool (files up to LIMIT filed, a ring of RING) downloading `data` from a fresh Guest."""
    guest = Guest(data)
    spool = Spool(tmp_path / "spool", "vm1/f", file_limit=LIMIT, ring=RING)
    try:
        async with trio.open_nursery() as nursery:
            spool.start_download(nursery, guest.opener)
            yield guest, spool
    finally:
        spool.close()


async def test_a_large_file_read_through_is_never_written_to_the_spool_file(tmp_path):
    async with downloading(tmp_path, os.urandom(2 << 20)) as (guest, spool):
        assert await _read_all(spool, len(guest.data)) == guest.data  # the reader is paced to, not outrun
        assert spool.landed and not spool.complete and spool.error is None
        assert os.fstat(spool.fd).st_size == 0 and spool.disk_bytes() == 0
        assert guest.opened == 1
        assert spool.surrender() is None  # not whole on disk: not for the content cache


async def test_a_small_file_is_filed_whole_as_before(tmp_path):
    async with downloading(tmp_path, os.urandom(LIMIT)) as (guest, spool):
        with trio.fail_after(20):
            await spool.wait_complete()
        assert spool.complete and os.pread(spool.fd, LIMIT + 1, 0) == guest.data and guest.opened == 1


async def test_an_empty_file_is_whole_at_once(tmp_path):
    async with downloading(tmp_path, b"") as (guest, spool):
        with trio.fail_after(10):
            await spool.wait_complete()  # what a writer's open waits for
            assert await spool.read(0, 4096) == b""
        assert spool.complete and spool.error is None and guest.opened == 1


async def test_going_back_behind_the_ring_reads_the_start_again_once(tmp_path):
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        assert await _read_all(spool, len(guest.data)) == guest.data
        with trio.fail_after(20):
            assert await spool.read(100, 5000) == guest.data[100:5100]  # long gone from the ring
            assert await spool.read(300_000, 9) == guest.data[300_000:300_009]
            await spool.wait_complete()
        assert guest.opened == 2  # one more transfer, for all the bytes the ring had dropped
        assert os.pread(spool.fd, 2 << 20, 0) == guest.data  # the file is whole now


async def test_readers_going_back_together_share_one_more_transfer(tmp_path):
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        assert await _read_all(spool, len(guest.data)) == guest.data
        got = {}

        async def back(off: int) -> None:
            got[off] = bytes(await spool.read(off, 1000))

        with trio.fail_after(20):
            async with trio.open_nursery() as readers:
                for off in (10, 20_000, 500_000):
                    readers.start_soon(back, off)
        assert got == {off: guest.data[off:off + 1000] for off in (10, 20_000, 500_000)}
        assert guest.opened == 2


async def test_a_writer_gets_the_whole_file_of_a_streamed_download(tmp_path):
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        with trio.fail_after(20):
            assert await spool.read(0, 4096) == guest.data[:4096]
            await spool.read(600_000, 4096)  # the reader moves on: the ring drops the start
            await spool.wait_complete()  # what a writer's open, or a truncate, waits for
        assert spool.complete and os.pread(spool.fd, 2 << 20, 0) == guest.data
        spool.write(0, b"changed")
        with trio.fail_after(5):
            assert await spool.read(0, 7) == b"changed"  # from the file now, not the ring


async def test_a_file_changed_on_the_guest_in_between_fails_the_reader_that_goes_back(tmp_path, caplog):
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        assert await _read_all(spool, len(guest.data)) == guest.data
        guest.mtime += 60  # a new version on the guest, same size
        with trio.fail_after(20), pytest.raises(pyfuse3.FUSEError) as err:
            await spool.read(0, 4096)
        assert err.value.errno == errno.EIO and not spool.complete
    assert "changed on the guest while it was being read" in caplog.text


async def test_an_idle_reader_is_not_waited_for_and_loses_nothing(tmp_path):
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        with trio.fail_after(20):
            first = bytes(await spool.read(0, 8192))
            await trio.sleep(IDLE + 0.5)  # `less` waiting for a key: the download goes on without it
            assert spool.landed
            rest = await _read_all_from(spool, 8192)
        assert first + rest == guest.data and guest.opened == 1  # no second transfer: the rest was filed
        assert 0 < os.fstat(spool.fd).st_size <= len(guest.data)


async def test_a_read_far_ahead_is_not_kept_waiting(tmp_path):
    """A read further ahead than the ring reaches (mmap, a random read): the download files from there on rather
    than wait for the reader at the start, or for IDLE."""
    async with downloading(tmp_path, os.urandom(1 << 20)) as (guest, spool):
        with trio.fail_after(IDLE * 0.8):
            assert await spool.read(0, 4096) == guest.data[:4096]
            assert await spool.read(900_000, 4096) == guest.data[900_000:904_096]
        with trio.fail_after(20):
            assert await spool.read(4096, 4096) == guest.data[4096:8192]  # the start again: behind, or filed
        assert guest.opened <= 2


async def _read_all_from(spool: Spool, off: int) -> bytes:
    parts = []
    while part := await spool.read(off, 8192):
        parts.append(bytes(part))
        off += len(part)
    return b"".join(parts)


async def test_closing_a_paced_download_ends_its_thread(tmp_path):
    before = threading.active_count()
    async with downloading(tmp_path, os.urandom(4 << 20)) as (guest, spool):
        with trio.fail_after(5):
            await spool.read(0, 4096)
        await trio.sleep(0.1)  # the thread waits for the reader, the ring full
        spool.close()
    with trio.fail_after(5):
        while threading.active_count() > before:
            await trio.sleep(0.05)


# ------------------------------------------------------------------------------------------- through the mount
DATA_MIB = 24


def _big(root) -> bytes:
    data = os.urandom(DATA_MIB << 20) + b"tail"
    (root / "big").write_bytes(data)
    os.link(root / "big", root / "big2")  # the same bytes under a name the kernel has cached nothing of
    return data


def test_cat_of_a_large_file_streams_it_in_one_transfer_without_spooling(tmp_path):
    from tests.helpers.mountfs import mounted_guestfs

    holder = {}
    with mounted_guestfs(tmp_path, setup=lambda root: holder.setdefault("data", _big(root)),
                         cache_config="content_file_max_mib = 1\n") as gm:
        data = holder["data"]
        gm.sim.reset_stats()
        out = subprocess.run(["cat", gm.vm / "big"], capture_output=True, timeout=120)
        assert out.returncode == 0 and hashlib.sha256(out.stdout).digest() == hashlib.sha256(data).digest()
        stats = gm.sim.stats()
        assert stats.get("guestFile.GET") == 1, stats
        assert not any(p.name.endswith(".spool") and p.stat().st_size for p in gm.spool.rglob("*")), \
            list(gm.spool.rglob("*"))
        # mmap (a program loader, a database): pages faulted in at random, far ahead and back again
        mapped = subprocess.run(
            [sys.executable, "-c",
             "import mmap, random, sys\n"
             "f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
             "rng = random.Random(7); offs = [rng.randrange(len(m) - 100) for _ in range(50)]\n"
             "sys.stdout.write(' '.join(m[o:o + 100].hex() for o in offs))\n", str(gm.vm / "big2")],
            capture_output=True, text=True, timeout=120)
        assert mapped.returncode == 0, mapped.stderr
        import random
        rng = random.Random(7)
        offs = [rng.randrange(len(data) - 100) for _ in range(50)]
        assert mapped.stdout.split() == [data[o:o + 100].hex() for o in offs]
        log = gm.log()
    assert "failed" not in log, log[-2000:]


def test_appending_to_a_file_being_streamed_keeps_every_byte(tmp_path):
    """A reader is half way through (the ring has dropped the start); a writer opens the file: the mount fetches
    the start again, and the upload holds the whole old file plus what was appended."""
    from tests.helpers.mountfs import mounted_guestfs

    holder = {}
    with mounted_guestfs(tmp_path, setup=lambda root: holder.setdefault("data", _big(root)),
                         cache_config="content_file_max_mib = 1\n") as gm:
        data = holder["data"]
        reader = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\n"
             "f = open(sys.argv[1], 'rb', buffering=0)\n"
             "got = f.read(16 << 20)\n"
             "while len(got) < 16 << 20: got += f.read((16 << 20) - len(got))\n"
             "print('half', flush=True); sys.stdin.readline()\n"
             "rest = f.read()\n"
             "while True:\n"
             "    more = f.read()\n"
             "    if not more: break\n"
             "    rest += more\n"
             "sys.stdout.write(str(len(got + rest)) + '\\n')\n", str(gm.vm / "big")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert reader.stdout.readline().strip() == "half"
            with open(gm.vm / "big", "ab") as f:
                f.write(b"appended")
            out, _ = reader.communicate("\n", timeout=60)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        assert reader.returncode == 0
        assert (gm.guest_dir("vm1") / "big").read_bytes() == data + b"appended"
        log = gm.log()
    assert "read again" in log, log[-2000:]


def test_reading_many_large_files_gives_each_ring_back(tmp_path):
    """Each download's 8 MiB ring goes back to the system when its file is closed, not at some garbage collection:
    twelve files read one after another leave the mount's RSS about where it was."""
    import re

    from tests.helpers.mountfs import mounted_guestfs

    def files(root):
        for i in range(12):
            with open(root / f"f{i}", "wb") as f:
                f.truncate(16 << 20)  # sparse: no disk, streams like any file

    def rss_mib(pid: int) -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) >> 10

    with mounted_guestfs(tmp_path, setup=files, cache_config="content_file_max_mib = 1\n") as gm:
        subprocess.run(["cat", gm.vm / "f0"], stdout=subprocess.DEVNULL, check=True, timeout=60)
        before = rss_mib(gm.proc.pid)
        for i in range(1, 12):
            subprocess.run(["cat", gm.vm / f"f{i}"], stdout=subprocess.DEVNULL, check=True, timeout=60)
        after = rss_mib(gm.proc.pid)
    assert after - before < 40, (before, after)  # 11 rings kept would be 88 MiB
