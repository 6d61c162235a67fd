"""Guest programs through the client (vsphere/guestprograms.py) against the real simulator in both dialects: links and
times made with hostile names, what each failure means as an errno, the calls each costs; plus the waiting and the
errno of failures no simulated guest gives (permissions, a program that never ends), with a stand-in guest."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from guestfs_mount.vsphere import guestprograms
from guestfs_mount.vsphere.faults import GuestFileError
from guestfs_mount.vsphere.guestfiles import open_client
from guestfs_mount.vsphere.model import FileType, GuestFileInfo, GuestProcess
from tests.test_client import CREDS, api, calls, config_for, vm_id  # noqa: F401  (api: fixture)

HOSTILE = ["-n", "a b", "q'u\"o`t$(x)", "new\nline", "* ?", "--", "() x"]


def test_program_keeps_every_word_out_of_the_shell_text():
    prog = guestprograms.program("/bin/ln", ["-s", "--", *HOSTILE])
    assert prog.arguments == " ".join(f'"$GUESTFS_ARG{i}"' for i in range(1, len(HOSTILE) + 3))
    assert list(prog.env.values()) == ["-s", "--", *HOSTILE]
    assert prog.working_directory == "/"
    for bad in ("nul\0byte", "() { :; }; echo pwned"):
        with pytest.raises(GuestFileError) as e:
            guestprograms.program("/bin/ln", ["-s", bad, "x"])
        assert e.value.errno == errno.EINVAL


async def test_symlinks_with_hostile_names_cost_two_calls_each(sim, api):
    root = sim.vm_dir("alpha")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        for name in HOSTILE:
            sim.reset_stats()
            info = await guestprograms.make_symlink(client, vm, CREDS, f"../{name}", f"/{name}")
            assert os.readlink(root / name) == f"../{name}"
            assert info.type is FileType.SYMLINK and info.symlink_target == f"../{name}"
            assert calls(sim, "StartProgramInGuest", "ListFilesInGuest", "ListProcessesInGuest") == {
                "StartProgramInGuest": 1, "ListFilesInGuest": 1, "ListProcessesInGuest": 0}, name
    assert sorted(os.listdir(root)) == sorted(HOSTILE)  # nothing else was made


async def test_what_failed_links_mean(sim, api):
    root = sim.vm_dir("alpha")
    (root / "file").write_text("x")
    (root / "dir").mkdir()
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)

        async def errno_of(call, *args):
            with pytest.raises(GuestFileError) as e:
                await call(client, vm, CREDS, *args)
            return e.value.errno

        sim.reset_stats()
        assert await errno_of(guestprograms.make_symlink, "t", "/file") == errno.EEXIST
        # the exit code was waited for: ListProcessesInGuest, not the effect
        assert calls(sim, "ListProcessesInGuest")["ListProcessesInGuest"] >= 1
        assert await errno_of(guestprograms.make_symlink, "t", "/missing/x") == errno.ENOENT
        assert await errno_of(guestprograms.make_symlink, "t", "/file/x") == errno.ENOTDIR
        assert await errno_of(guestprograms.make_symlink, "", "/empty") == errno.ENOENT  # symlink(2) of ""
        assert await errno_of(guestprograms.make_hardlink, "/missing", "/h") == errno.ENOENT
        assert await errno_of(guestprograms.make_hardlink, "/dir", "/h") == errno.EPERM
        assert await errno_of(guestprograms.make_hardlink, "/file", "/dir") == errno.EEXIST
        assert await errno_of(guestprograms.set_symlink_times, "/nolink", 1_500_000_000, None) == errno.ENOENT
        made = await guestprograms.make_hardlink(client, vm, CREDS, "/file", "/hard")
        assert made.type is FileType.FILE and os.stat(root / "hard").st_ino == os.stat(root / "file").st_ino
    assert sorted(os.listdir(root)) == ["dir", "file", "hard"]


async def test_a_symlinks_own_times_leave_its_target_alone(sim, api):
    root = sim.vm_dir("alpha")
    (root / "target").write_text("x")
    os.utime(root / "target", (1_000_000_000, 1_000_000_000))
    os.symlink("target", root / "link")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        await guestprograms.set_symlink_times(client, vm, CREDS, "/link", 1_500_000_000, 1_500_000_000)
        assert os.lstat(root / "link").st_mtime == os.lstat(root / "link").st_atime == 1_500_000_000
        # the guest reports a link's target's times, never its own (the agent stats through links): a stat cannot
        # tell that touch -h worked, so none is made and the exit code says it
        assert (await client.stat(vm, CREDS, "/link")).mtime == 1_000_000_000
        assert calls(sim, "StartProgramInGuest", "ListProcessesInGuest", "ListFilesInGuest") == {
            "StartProgramInGuest": 1, "ListProcessesInGuest": 1, "ListFilesInGuest": 1}  # the stat just above
        sim.reset_stats()
        await guestprograms.set_symlink_times(client, vm, CREDS, "/link", 1_600_000_000, 1_400_000_000)
        # mtime and atime apart: two runs, each with its exit code
        assert calls(sim, "StartProgramInGuest", "ListProcessesInGuest", "ListFilesInGuest") == {
            "StartProgramInGuest": 2, "ListProcessesInGuest": 2, "ListFilesInGuest": 0}
    assert os.lstat(root / "link").st_mtime == 1_600_000_000
    assert os.lstat(root / "link").st_atime == 1_400_000_000
    assert os.stat(root / "target").st_mtime == 1_000_000_000


async def test_a_symlinks_own_owner_leaves_its_target_alone(sim, api):
    root = sim.vm_dir("alpha")
    (root / "target").write_text("x")
    os.chown(root / "target", 4000, 4000)
    os.symlink("target", root / "link")
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        sim.reset_stats()
        await guestprograms.set_symlink_owner(client, vm, CREDS, "/link", 33, 34)
        assert (os.lstat(root / "link").st_uid, os.lstat(root / "link").st_gid) == (33, 34)
        await guestprograms.set_symlink_owner(client, vm, CREDS, "/link", None, 35)  # the group only
        assert (os.lstat(root / "link").st_uid, os.lstat(root / "link").st_gid) == (33, 35)
        # the guest reports the target's owner: only the exit code tells, one start and its ListProcesses each
        assert ((s := await client.stat(vm, CREDS, "/link")).uid, s.gid) == (4000, 4000)
        assert calls(sim, "StartProgramInGuest", "ListProcessesInGuest") == {
            "StartProgramInGuest": 2, "ListProcessesInGuest": 2}
        with pytest.raises(GuestFileError) as missing:
            await guestprograms.set_symlink_owner(client, vm, CREDS, "/nolink", 1, 1)
        assert missing.value.errno == errno.ENOENT
    assert (os.stat(root / "target").st_uid, os.stat(root / "target").st_gid) == (4000, 4000)


async def test_programs_the_guest_will_not_start(sim, api):
    async with open_client(config_for(sim, api)) as client:
        vm = await vm_id(client)
        with pytest.raises(guestprograms.ProgramNotStarted) as missing:
            await guestprograms.start(client, vm, CREDS, guestprograms.program("/bin/sh", ["-c", "id"]))
        assert missing.value.errno == errno.EPERM  # the program's path, not a file to make: never ENOENT
        sim.fault("StartProgramInGuest", "NoPermission")
        with pytest.raises(guestprograms.ProgramNotStarted) as denied:
            await guestprograms.make_symlink(client, vm, CREDS, "t", "/l")
        assert denied.value.errno == errno.EACCES
        pid = await guestprograms.start(client, vm, CREDS, guestprograms.program("/bin/ln", ["-s", "t", "/l"]))
        assert await guestprograms.exit_code(client, vm, CREDS, pid, "ln") == 0
        with pytest.raises(GuestFileError) as gone:
            await guestprograms.exit_code(client, vm, CREDS, 99999, "ln")
        assert gone.value.errno == errno.EIO


class StandIn:
    """A guest whose programs end as told (or never), for the failures no simulated guest gives."""

    def __init__(self, exit_code: int | None, existing: dict[str, FileType]):
        self.exit_code, self.existing, self.polls = exit_code, existing, 0

    async def start_program(self, vm, creds, program):
        return 42

    async def list_processes(self, vm, creds, pids):
        self.polls += 1
        ended = self.exit_code is not None
        return [GuestProcess(42, self.exit_code if ended else 0, 1.0 if ended else None)]

    async def stat(self, vm, creds, path):
        if path not in self.existing:
            raise GuestFileError("FileNotFound", errno=errno.ENOENT)
        return GuestFileInfo(name=path, type=self.existing[path], uid=0, gid=0)


async def test_a_failure_nothing_explains_is_eacces_and_times_eperm():
    guest = StandIn(1, {"/": FileType.DIRECTORY, "/link": FileType.SYMLINK, "/f": FileType.FILE})
    for call, args, expected in [(guestprograms.make_symlink, ("t", "/new"), errno.EACCES),
                                 (guestprograms.make_hardlink, ("/f", "/new"), errno.EACCES),
                                 (guestprograms.set_symlink_times, ("/link", 5, None), errno.EPERM)]:
        with pytest.raises(GuestFileError) as e:
            await call(guest, "vm-1", None, *args)
        assert e.value.errno == expected, call


async def test_a_program_that_never_ends_times_out_with_backoff():
    guest = StandIn(None, {"/": FileType.DIRECTORY})
    started = trio.current_time()
    with pytest.raises(GuestFileError) as e:
        await guestprograms.make_symlink(guest, "vm-1", None, "t", "/new", timeout=2.0)
    assert e.value.errno == errno.ETIMEDOUT
    assert 1.9 <= trio.current_time() - started < 3
    assert guest.polls == 3  # after 0.2, 0.4 and 0.8 s; the next (1 s later) would come after the timeout
