"""Symlinks, hard links and directory times on a real mount of the simulator, in both dialects, driven by real
programs: cat and vim through a guest's absolute and relative links land on the guest's file (never on the local
file of the same path), ln makes links with any name, rsync -a of a tree with links and nested directories leaves
the guest exactly like the source, directories and links included."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers.mounting import wait_until
from tests.helpers.mountfs import mounted_guestfs
from tests.test_mount import APIS, errno_of, run

# vm1 may run programs; vm2's login may not; win is a Windows guest
LOGINS = 'exec = true\n[vms."vm2"]\nusername = "root"\npassword = "vmware"\n'


def _windows_vm(vm1: Path) -> None:
    (vm1.parent / ".vms.json").write_text(json.dumps({"win": {"guestFamily": "windowsGuest"}}))
    (vm1.parent / "win/C/Windows").mkdir(parents=True)
    (vm1.parent / "win/C/Windows/win.ini").write_text("[fonts]\n")
    (vm1.parent / "win/C/Users").mkdir()
    os.symlink("C:\\Windows\\win.ini", vm1.parent / "win/C/Users/ini")
    os.symlink("\\\\server\\share\\x", vm1.parent / "win/C/Users/unc")


@pytest.fixture(scope="module", params=APIS)
def gm(request, tmp_path_factory):
    with mounted_guestfs(tmp_path_factory.mktemp(f"links-{request.param}"), request.param, setup=_windows_vm,
                         vms=("vm1", "vm2", "win"), login_config=LOGINS) as m:
        yield m
        assert "Traceback" not in m.log(), m.log()[-3000:]


@pytest.fixture
def work(gm, request):
    name = request.node.name.replace("[", "_").replace("]", "")
    (gm.guest / name).mkdir()
    return gm.vm / name, gm.guest / name


def _forget_own_records(gm) -> None:
    """What the mount shows once the records of its own changes have expired (attr_ttl), without waiting for it:
    SIGHUP makes it forget them, as `guestfs-mount refresh` does."""
    done = gm.log().count("refreshed the whole mount")
    os.kill(gm.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: gm.log().count("refreshed the whole mount") > done, 10)


def _guest_and_local_targets(guest: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A file at the same absolute path locally ("LOCAL") and in the guest ("GUEST")."""
    local = tmp_path / "same-path" / "stub-resolv.conf"
    local.parent.mkdir()
    local.write_text("LOCAL\n")
    in_guest = guest.parent / str(local).lstrip("/")
    in_guest.parent.mkdir(parents=True)
    in_guest.write_text("GUEST\n")
    return local, in_guest


def test_cat_and_vim_through_guest_links_stay_in_the_guest(gm, work, tmp_path):
    mnt, guest = work
    local, in_guest = _guest_and_local_targets(guest, tmp_path)
    os.symlink(str(local), guest / "resolv.conf")  # absolute, as /etc/resolv.conf -> /run/systemd/...
    os.symlink(os.path.relpath(in_guest, guest), guest / "relative")
    os.symlink("../" * 12 + str(local).lstrip("/"), guest / "climber")  # past the guest's root
    depth = len(guest.relative_to(gm.guest).parts)
    assert os.readlink(mnt / "resolv.conf") == "../" * depth + str(local).lstrip("/")
    assert os.lstat(mnt / "resolv.conf").st_size == len(os.readlink(mnt / "resolv.conf"))
    for name in ("resolv.conf", "relative", "climber"):
        assert run("cat", mnt / name).stdout == "GUEST\n", name
    run("vim", "-es", "-c", "%s/GUEST/EDITED/", "-c", "wq", mnt / "resolv.conf")
    assert in_guest.read_text() == "EDITED\n"
    assert local.read_text() == "LOCAL\n"
    assert os.readlink(guest / "resolv.conf") == str(local)  # still the guest's link, unchanged


def test_windows_guest_links_land_on_its_drives_and_none_are_made(gm):
    users = gm.vm_dir("win") / "C:" / "Users"
    if gm.api == "rest":
        assert os.readlink(users / "ini") == "../Windows/win.ini"
        assert run("cat", users / "ini").stdout == "[fonts]\n"
        assert os.readlink(users / "unc") == "../../UNC/server/share/x"  # inside the VM's directory, nowhere
        assert errno_of(os.stat, users / "unc") == errno.ENOENT
    else:  # GuestWindowsFileAttributes carry no symlinkTarget: a link that cannot be read or followed
        assert errno_of(os.readlink, users / "ini") == errno_of(os.stat, users / "unc") == errno.EOPNOTSUPP
    assert errno_of(os.symlink, "x", users / "new") == errno.EPERM
    assert gm.log().count("VM win: is a Windows guest") == 1


NAMES = ["-n leading dash", "with space", "quote's \"double\"", "new\nline", "$(touch pwned) `id`; *"]


def test_ln_makes_symlinks_and_hard_links_with_any_name(gm, work):
    mnt, guest = work
    (guest / "file").write_text("data\n")
    for name in NAMES:
        run("ln", "-s", "--", f"../{name} target", mnt / name)
        assert os.readlink(guest / name) == f"../{name} target"
        assert os.readlink(mnt / name) == f"../{name} target"
    run("ln", "-s", mnt / "file", mnt / "absolute")  # into this VM's directory of the mount: the guest's own path
    assert os.readlink(guest / "absolute") == "/" + str((guest / "file").relative_to(gm.guest))
    assert run("cat", mnt / "absolute").stdout == "data\n"
    run("ln", mnt / "file", mnt / "hard link")
    assert os.stat(guest / "hard link").st_ino == os.stat(guest / "file").st_ino
    assert sorted(os.listdir(guest)) == sorted([*NAMES, "file", "absolute", "hard link"])
    assert not (gm.guest / "pwned").exists() and not Path("pwned").exists()
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(guest))
    os.utime(mnt / "absolute", (1_500_000_000, 1_500_000_000), follow_symlinks=False)  # touch -h
    assert os.lstat(guest / "absolute").st_mtime == 1_500_000_000
    assert os.stat(guest / "file").st_mtime != 1_500_000_000  # the target is not touched
    assert os.lstat(mnt / "absolute").st_mtime == 1_500_000_000  # the mount's own record, until attr_ttl
    # then what the guest reports: a link's target's times (the agent stats through links), never its own
    os.utime(guest / "file", (1_200_000_000, 1_200_000_000))
    _forget_own_records(gm)
    assert os.lstat(mnt / "absolute").st_mtime == 1_200_000_000
    assert os.lstat(guest / "absolute").st_mtime == 1_500_000_000
    # a link made through the mount shows the time of its making, not its target's, so a program setting the
    # target's mtime on it (rsync, when the target came first) is not told that it is set already
    run("ln", "-s", "file", mnt / "fresh")
    assert os.lstat(mnt / "fresh").st_mtime != 1_200_000_000
    os.utime(mnt / "fresh", (1_200_000_000, 1_200_000_000), follow_symlinks=False)
    assert os.lstat(guest / "fresh").st_mtime == 1_200_000_000
    gm.reset_stats()
    os.utime(mnt / "fresh", (1_200_000_000, 1_200_000_000), follow_symlinks=False)  # the mount set it: no program
    assert "StartProgramInGuest" not in gm.stats()


def test_what_a_failed_link_says(gm, work):
    mnt, guest = work
    # the guest changed behind the mount's back, so only the guest can say why ln failed
    assert not os.path.lexists(mnt / "made-meanwhile")
    (guest / "made-meanwhile").write_text("x")
    assert errno_of(os.symlink, "t", mnt / "made-meanwhile") == errno.EEXIST
    for name, replace in (("gone", None), ("now-a-file", "file")):
        (guest / name).mkdir()
        assert os.listdir(mnt / name) == []
        (guest / name).rmdir()
        if replace:
            (guest / name).write_text("x")
        expected = errno.ENOTDIR if replace else errno.ENOENT
        assert errno_of(os.symlink, "t", mnt / name / "x") == expected, name
    assert errno_of(os.link, mnt / "no-such", mnt / "h") == errno.ENOENT
    gm.sim.fault("StartProgramInGuest", "NoPermission", 1, "vm1")
    assert errno_of(os.symlink, "t", mnt / "denied") == errno.EACCES
    assert "VirtualMachine.GuestOperations.Execute" in gm.log()
    os.symlink("t", mnt / "allowed-again")
    assert os.readlink(guest / "allowed-again") == "t"


def test_without_exec_links_are_eperm_and_the_log_says_which_key(gm):
    mnt, guest = gm.vm_dir("vm2"), gm.guest_dir("vm2")
    (guest / "f").write_text("x")
    before = gm.stats().get("StartProgramInGuest", 0)
    assert errno_of(os.symlink, "t", mnt / "l") == errno.EPERM
    assert errno_of(os.link, mnt / "f", mnt / "h") == errno.EPERM
    assert gm.stats().get("StartProgramInGuest", 0) == before  # not even tried
    assert gm.log().count('VM vm2: the guest login has no "exec = true"') == 1
    assert sorted(os.listdir(guest)) == ["f"]


def test_a_directory_shows_the_guests_times_after_a_change_in_it(gm, work):
    mnt, guest = work
    (mnt / "d").mkdir()
    os.utime(mnt / "d", (1_000_000_000, 1_000_000_000))
    assert os.stat(mnt / "d").st_mtime == 1_000_000_000
    (mnt / "d" / "f").write_text("x")  # the guest's directory mtime moves to the time of the change

    def shown_as_on_the_guest() -> bool:  # the same second, or the next one when the change straddled two
        return 0 <= os.stat(mnt / "d").st_mtime - int(os.stat(guest / "d").st_mtime) <= 1

    assert os.stat(mnt / "d").st_mtime != 1_000_000_000 and shown_as_on_the_guest()
    os.utime(mnt / "d", (1_000_000_000, 1_000_000_000))  # set again: it reaches the guest
    assert os.stat(guest / "d").st_mtime == os.stat(mnt / "d").st_mtime == 1_000_000_000
    (mnt / "d" / "f").rename(mnt / "d" / "g")
    assert shown_as_on_the_guest()
    os.utime(mnt / "d", (1_000_000_000, 1_000_000_000))
    os.symlink("g", mnt / "d" / "link")
    assert shown_as_on_the_guest()


def _source_tree(src: Path) -> None:
    for d in ("a/b/c", "a/d", "e", "f g"):
        (src / d).mkdir(parents=True)
    for i, f in enumerate(("a/f1", "a/b/f2", "a/b/c/f3", "e/f4", "top", "f g/h i")):
        (src / f).write_text(f"content {i}\n")
    os.symlink("../top", src / "a/rel")
    os.symlink("c/f3", src / "a/b/down")
    os.symlink("dangling", src / "e/dangling")
    os.symlink("/etc/hostname", src / "a/b/absolute")
    os.symlink("../a", src / "f g/dir link")
    if os.geteuid() == 0:  # rsync -a as root keeps owners: a link (and its target) of another user
        (src / "owned").mkdir()
        (src / "owned/site.html").write_text("<p>hi</p>\n")
        os.symlink("site.html", src / "owned/index.html")
        for p in (src / "owned", src / "owned/site.html", src / "owned/index.html"):
            os.chown(p, 4321, 4322, follow_symlinks=False)
    for p in sorted(src.rglob("*"), reverse=True):
        os.utime(p, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    os.utime(src, (1_600_000_000, 1_600_000_000))


def _itemized(*args) -> list[str]:
    out = run("rsync", "-a", "--itemize-changes", *args).stdout
    return [line for line in out.splitlines() if line.strip()]


def _changed(lines: list[str]) -> list[str]:
    """The itemized lines that say rsync changed something (sorted)."""
    return sorted(line for line in lines if line[:1] in "<>ch.*")


def _rsync_once_own_records_are_gone(gm, src: Path, dst: Path) -> list[str]:
    """rsync -a SRC/ DST/ through the mount once its records of its own changes are gone (attr_ttl), so what it
    shows is what the guest reports: it transfers no file; the lines that say what changed (guest calls counted
    from its start)."""
    _forget_own_records(gm)
    gm.reset_stats()
    lines = _itemized("--stats", f"{src}/", f"{dst}/")
    assert "Number of regular files transferred: 0" in lines
    return _changed(lines)


def test_rsync_of_a_tree_with_links_leaves_the_guest_equal_to_the_source(gm, work, tmp_path):
    mnt, guest = work
    src = tmp_path / "src"
    _source_tree(src)
    run("rsync", "-a", f"{src}/", f"{mnt}/dst/")
    # the guest's own files against the source: contents, modes, owners, times of files, directories and links (a
    # link's own times and owner, which only touch -h and chown -h in the guest set and no guest call shows)
    assert _itemized("--dry-run", "--checksum", f"{src}/", f"{guest}/dst/") == []
    # a second run once the mount's records of its own changes are gone (attr_ttl): the guest reports a link's
    # target's times, so rsync sets again the times of each link whose target's times differ from the source
    # link's (the dangling link's are zeros; /etc/hostname is dangling in the guest), one touch -h each, and
    # transfers no file; the absolute link is also made again, as the mount shows it inside the VM's directory
    # (symlinks = "inside")
    assert _rsync_once_own_records_are_gone(gm, src, mnt / "dst") == [
        ".L..t...... e/dangling -> dangling", "cLc.t...... a/b/absolute -> /etc/hostname"]
    assert gm.stats().get("StartProgramInGuest") == 3  # ln -s and touch -h of absolute, touch -h of dangling
    assert "InitiateFileTransferToGuest" not in gm.stats()
    assert _itemized("--dry-run", "--checksum", f"{src}/", f"{guest}/dst/") == []


# every call that changes something in the guest
CHANGES = {"StartProgramInGuest", "MoveFileInGuest", "ChangeFileAttributesInGuest", "InitiateFileTransferToGuest",
           "MakeDirectoryInGuest", "DeleteFileInGuest"}


def test_symlinks_raw_shows_targets_as_the_guest_has_them(tmp_path):
    with mounted_guestfs(tmp_path, "vi-json", attr_ttl=300.0, login_config="exec = true",
                         mount_config='symlinks = "raw"\n') as gm:
        local, in_guest = _guest_and_local_targets(gm.guest, tmp_path)
        os.symlink(str(local), gm.guest / "abs")
        assert os.readlink(gm.vm / "abs") == str(local)
        assert run("cat", gm.vm / "abs").stdout == "LOCAL\n"  # what raw means: the kernel follows it here
        run("ln", "-s", gm.vm / "x", gm.vm / "made")
        assert os.readlink(gm.guest / "made") == str(gm.vm / "x")  # written as given
        src = tmp_path / "src"
        _source_tree(src)
        run("rsync", "-a", f"{src}/", f"{gm.vm}/dst/")
        assert _itemized("--dry-run", "--checksum", f"{src}/", f"{gm.guest}/dst/") == []
        # within attr_ttl (300 s here) the mount shows the links' times it set itself: nothing to do
        gm.reset_stats()
        assert _changed(_itemized(f"{src}/", f"{gm.vm}/dst/")) == []
        assert not CHANGES & set(gm.stats()), gm.stats()
        # afterwards the guest's report, a link's target's times: the links whose targets' times differ from the
        # source links' get touch -h again (one program each), and nothing else changes
        assert _rsync_once_own_records_are_gone(gm, src, gm.vm / "dst") == [
            ".L..t...... a/b/absolute -> /etc/hostname", ".L..t...... e/dangling -> dangling"]
        assert {k: v for k, v in gm.stats().items() if k in CHANGES} == {"StartProgramInGuest": 2}
        assert _itemized("--dry-run", "--checksum", f"{src}/", f"{gm.guest}/dst/") == []
