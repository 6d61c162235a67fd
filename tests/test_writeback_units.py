"""The write-back queue's own rules (fs/writeback.py), on fake uploads under trio's mock clock: the delay, oldest
first within the per-VM limit, retries of faults that pass and none of others, sync and the bound."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import pyfuse3
import trio
import trio.testing

from guestfs_mount.fs.handles import OpenFile
from guestfs_mount.fs.spool import Spool
from guestfs_mount.fs.writeback import RETRIES, WriteBack


class Fake:
    """Files by inode with paths, an upload that follows a script of outcomes per inode."""

    def __init__(self, tmp: Path, delay: float = 1.0, max_bytes: int = 1 << 30, per_vm: int = 2):
        self.tmp = tmp
        self.paths: dict[int, str] = {}
        self.script: dict[int, list] = {}  # inode -> outcomes (None: success; an errno: FUSEError)
        self.log: list[tuple[float, str, int]] = []
        self.kept: list[int] = []
        self.finished: list[int] = []
        self.gate: trio.Event | None = None  # uploads wait for it when set
        self.q = WriteBack(delay=delay, max_bytes=max_bytes, per_vm=per_vm, upload=self.upload, give_up=self.give_up,
                           finished=self.done, path_of=lambda of: self.paths.get(of.inode), writing=lambda of: False)

    def file(self, inode: int, path: str, size: int = 10) -> OpenFile:
        of = OpenFile(inode, Spool(self.tmp, path), None, dirty=True)
        of.spool.make_empty()
        of.spool.write(0, b"x" * size)
        self.paths[inode] = path
        return of

    async def upload(self, of: OpenFile) -> None:
        self.log.append((trio.current_time(), "start", of.inode))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.get(of.inode, [None]).pop(0) if self.script.get(of.inode) else None
        if outcome is not None:
            raise pyfuse3.FUSEError(outcome)
        of.dirty = False
        self.log.append((trio.current_time(), "done", of.inode))

    async def give_up(self, of: OpenFile, error: Exception) -> str:
        of.dirty = False
        self.kept.append(of.inode)
        return f"/recovered/{self.paths[of.inode]}"

    async def done(self, of: OpenFile) -> None:
        self.finished.append(of.inode)

    @contextlib.asynccontextmanager
    async def running(self):
        """The queue at work in a nursery (yielded, for the test's own tasks), stopped when the block ends."""
        async with trio.open_nursery() as n:
            n.start_soon(self.q.run)
            yield n
            n.cancel_scope.cancel()


def _run(test):
    clock = trio.testing.MockClock(autojump_threshold=0.01)
    trio.run(test, clock=clock)


def test_uploads_start_after_the_delay_oldest_first_within_the_per_vm_limit(tmp_path):
    async def main():
        f = Fake(tmp_path, delay=1.0, per_vm=2)
        f.gate = trio.Event()
        async with f.running():
            for i in range(1, 5):
                f.q.add(f.file(i, f"vm1/f{i}"))
            f.q.add(f.file(9, "vm2/other"))
            await trio.sleep(0.5)
            assert f.log == []  # not before the delay
            await trio.sleep(1)
            starts = [i for _, what, i in f.log if what == "start"]
            assert sorted(starts) == [1, 2, 9]  # two of vm1 (the oldest), vm2's beside them
            f.gate.set()
            await trio.sleep(1)
            assert [i for _, what, i in f.log if what == "done"][-2:] in ([3, 4], [4, 3])
            assert sorted(f.finished) == [1, 2, 3, 4, 9] and not f.q.entries
    _run(main)


def test_a_fault_that_passes_is_retried_and_others_are_kept_at_once(tmp_path):
    async def main():
        f = Fake(tmp_path, delay=0)
        f.script = {1: [errno.ETIMEDOUT, errno.ECONNRESET], 2: [errno.ENOSPC],
                    3: [errno.ETIMEDOUT] * (RETRIES + 1)}
        async with f.running():
            for i in (1, 2, 3):
                f.q.add(f.file(i, f"vm1/f{i}"))
            failed = await f.q.sync([""])
            assert sorted(x.path for x in failed) == ["vm1/f2", "vm1/f3"]
            assert sorted(f.kept) == [2, 3]
            assert [i for _, what, i in f.log if what == "start"].count(1) == 3  # two retries, then it landed
            starts = [t for t, what, i in f.log if what == "start" and i == 1]
            assert starts[1] - starts[0] >= 2 and starts[2] - starts[1] >= 10  # their pauses, though sync waits
            assert [i for _, what, i in f.log if what == "start"].count(2) == 1  # disk full: no retry
            assert [i for _, what, i in f.log if what == "start"].count(3) == RETRIES + 1
            assert (await f.q.sync([""])) == []  # reported once
            assert sorted(x["path"] for x in f.q.snapshot()["failed"]) == ["vm1/f2", "vm1/f3"]  # status lists them
    _run(main)


def test_sync_of_a_path_waits_only_for_uploads_under_it_and_skips_the_delay(tmp_path):
    async def main():
        f = Fake(tmp_path, delay=60)
        async with f.running():
            f.q.add(f.file(1, "vm1/a/x"))
            f.q.add(f.file(2, "vm1/b/y"))
            start = trio.current_time()
            assert await f.q.sync(["vm1/a"]) == []
            assert trio.current_time() - start < 1
            assert [i for _, what, i in f.log if what == "done"] == [1]
            assert f.q.snapshot()["pending"][0]["path"] == "vm1/b/y"
    _run(main)


def test_a_writer_waits_for_room_while_the_queue_holds_more_than_the_bound(tmp_path):
    async def main():
        f = Fake(tmp_path, delay=60, max_bytes=100)
        f.gate = trio.Event()
        async with f.running() as n:
            f.q.add(f.file(1, "vm1/a", size=80))
            f.q.add(f.file(2, "vm1/b", size=80))
            new = f.file(3, "vm1/c", size=80)
            waited = trio.Event()

            async def writer():
                await f.q.room(new)
                waited.set()

            n.start_soon(writer)
            await trio.sleep(5)
            assert not waited.is_set()  # 160 bytes queued besides it: the close waits
            assert {i for _, what, i in f.log if what == "start"} == {1, 2}  # urged: no 60 s delay
            f.gate.set()
            await trio.sleep(1)
            assert waited.is_set()
    _run(main)
