"""Symlink targets as the mount shows them (fs/symlinks.py): nothing a guest's link says may lead out of the VM's
directory when the local kernel follows it, and what already stays inside reads back unchanged."""

from __future__ import annotations

import os
import posixpath

import pytest

from guestfs_mount.fs.symlinks import guest_target, shown_target

LINUX = [
    # (link's directory below the VM's, guest target, shown)
    (["etc"], "/run/systemd/resolve/stub-resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
    (["etc"], "/usr/share/zoneinfo/Europe/Paris", "../usr/share/zoneinfo/Europe/Paris"),
    (["etc", "alternatives"], "/usr/bin/vim.basic", "../../usr/bin/vim.basic"),
    (["etc"], "/etc/hosts", "hosts"),
    ([], "/etc/hosts", "etc/hosts"),
    (["usr", "lib"], "/usr/lib/x86_64/libc.so.6", "x86_64/libc.so.6"),
    (["etc"], "/", ".."),
    ([], "/", "."),
    (["etc"], "/usr/lib/", "../usr/lib/"),
    (["etc"], "//run///x", "../run/x"),
    (["etc"], "/../../../etc/passwd", "passwd"),
    (["etc"], "/a/./b/../c", "../a/c"),
    # relative: as it is while it stays inside
    (["etc"], "hosts", "hosts"),
    (["etc", "ssl", "certs"], "../../../usr/share/ca/x.pem", "../../../usr/share/ca/x.pem"),
    (["etc"], "../run/x", "../run/x"),
    (["etc"], "dir/", "dir/"),
    # relative past the guest's root: stops at the VM's directory, as the guest's kernel stops at /
    (["etc"], "../../../../etc/shadow", "shadow"),
    (["etc"], "../../x", "../x"),
    ([], "..", "."),
    ([], "../x", "x"),
    # not normal: rewritten (never a `..` after a name: it could climb out through another link)
    (["etc"], "a/../../../../x", "../x"),
    (["etc"], "./hosts", "hosts"),
    (["etc"], ".", "."),
    (["etc"], "a//b", "a/b"),
    # Windows-looking targets on a Linux guest are names like any other
    (["etc"], "C:\\x", "C:\\x"),
    (["etc"], "\\\\server\\share", "\\\\server\\share"),
    # odd names
    (["etc"], "", ""),
    (["etc"], "with space/and\nnewline", "with space/and\nnewline"),
    (["etc"], "/with space/x\ny", "../with space/x\ny"),
    (["etc"], "-rf", "-rf"),
]


@pytest.mark.parametrize("dirs,target,shown", LINUX)
def test_linux_targets(dirs, target, shown):
    assert shown_target(target, dirs) == shown


WINDOWS = [
    (["C:", "Users"], "C:\\Windows\\win.ini", "../Windows/win.ini"),
    (["C:", "Users"], "c:\\Windows", "../Windows"),
    (["C:"], "C:/data/x", "data/x"),
    (["C:", "Users"], "\\\\?\\C:\\Windows", "../Windows"),
    (["C:", "Users"], "\\??\\C:\\Windows\\", "../Windows/"),
    (["C:", "Users"], "D:\\data", "../../D:/data"),
    (["C:", "Users"], "\\\\server\\share\\x", "../../UNC/server/share/x"),
    (["C:", "Users"], "\\\\?\\UNC\\server\\share", "../../UNC/server/share"),
    (["C:", "Users"], "\\Windows", "../Windows"),
    (["C:", "Users", "a"], "..\\b", "../b"),
    (["C:", "Users"], "..\\..\\..\\..\\x", "../x"),
    (["C:", "Users"], "docs\\x.txt", "docs/x.txt"),
    (["C:"], "", ""),
]


@pytest.mark.parametrize("dirs,target,shown", WINDOWS)
def test_windows_targets(dirs, target, shown):
    assert shown_target(target, dirs, windows=True, drives=("C:", "D:")) == shown


def _resolves_inside(dirs: list[str], shown: str) -> bool:
    """Follow `shown` lexically from the link's directory in a mount laid out as MP/vm/<dirs>: it must stay in
    MP/vm (a raw absolute target would not)."""
    vm_dir = "/MP/vm"
    if shown.startswith("/"):
        return False
    here = posixpath.join(vm_dir, *dirs)
    return posixpath.normpath(posixpath.join(here, shown)).startswith(vm_dir)


@pytest.mark.parametrize("dirs,target,shown", LINUX)
def test_every_linux_target_stays_inside(dirs, target, shown):
    assert shown == "" or _resolves_inside(dirs, shown), shown


@pytest.mark.parametrize("dirs,target,shown", WINDOWS)
def test_every_windows_target_stays_inside(dirs, target, shown):
    assert shown == "" or _resolves_inside(dirs, shown), shown


def test_random_targets_stay_inside():
    import random

    rng = random.Random(17)
    atoms = ["..", ".", "a", "b c", "", "C:", "\\\\srv", "x\ny"]
    for _ in range(3000):
        dirs = [rng.choice(["etc", "usr", "x y"]) for _ in range(rng.randint(0, 4))]
        target = ("/" if rng.random() < 0.5 else "") + "/".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))
        for windows in (False, True):
            link_dirs = (["C:"] + dirs) if windows else dirs
            shown = shown_target(target.replace("/", "\\") if windows else target, link_dirs, windows=windows)
            assert shown == "" or _resolves_inside(link_dirs, shown), (link_dirs, target, shown)


def test_a_real_link_resolves_inside(tmp_path):
    """The kernel, not a model of it: a shown target, made a real link, opens the file inside the VM's dir."""
    vm = tmp_path / "vm"
    (vm / "run").mkdir(parents=True)
    (vm / "etc").mkdir()
    (vm / "run" / "x").write_text("guest")
    os.symlink(shown_target("/run/x", ["etc"]), vm / "etc" / "link")
    os.symlink(shown_target("../../../../run/x", ["etc"]), vm / "etc" / "climber")
    assert (vm / "etc" / "link").read_text() == "guest"
    assert (vm / "etc" / "climber").read_text() == "guest"


GUEST = [
    ("/mnt/vms/web01/etc/hosts", "/etc/hosts"),
    ("/mnt/vms/web01", "/"),
    ("/mnt/vms/web01/", "/"),
    ("/mnt/vms/web01/usr/lib/", "/usr/lib/"),
    ("/mnt/vms/web01/a/../b", "/b"),
    ("/mnt/vms/web02/etc/hosts", "/mnt/vms/web02/etc/hosts"),  # another VM's files: not this guest's path
    ("/mnt/vms/web01x/y", "/mnt/vms/web01x/y"),
    ("/etc/hosts", "/etc/hosts"),
    ("../x", "../x"),
    ("", ""),
    ("-n", "-n"),
]


@pytest.mark.parametrize("target,written", GUEST)
def test_targets_written_to_the_guest(target, written):
    assert guest_target(target, "/mnt/vms", "web01") == written


def test_round_trip_of_a_link_made_through_the_mount():
    # ln -s /mnt/vms/web01/run/x /mnt/vms/web01/etc/link: the guest gets /run/x, the mount shows ../run/x
    written = guest_target("/mnt/vms/web01/run/x", "/mnt/vms", "web01")
    assert written == "/run/x"
    assert shown_target(written, ["etc"]) == "../run/x"
