"""The mount driven by real programs (ls, stat, cat, cp, rsync, vim, sed, mv, ...) on the simulated vCenter, in
every API dialect. One mount per dialect serves the tests of this module; each test works in its own directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.model import ModelSteps
from tests.helpers.mountfs import mounted_guestfs

APIS = ["vi-json", "soap", "rest"]


def run(*cmd, cwd=None, timeout=120, input=None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, timeout=timeout, capture_output=True, text=True, input=input)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}: {p.stderr}{p.stdout}"
    return p


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def calls(stats: dict) -> int:
    """Guest operations and transfers (not logins or inventory queries)."""
    return sum(v for k, v in stats.items() if k.endswith("InGuest") or k.startswith(("guestFile", "InitiateFile")))


@pytest.fixture(scope="module", params=APIS)
def gm(request, tmp_path_factory):
    with mounted_guestfs(tmp_path_factory.mktemp(f"mount-{request.param}"), request.param) as m:
        yield m
        assert "Traceback" not in m.log(), m.log()[-3000:]


@pytest.fixture
def work(gm, request):
    """A fresh directory for one test: (its path in the mount, its path on the guest)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    (gm.guest / name).mkdir()
    return gm.vm / name, gm.guest / name


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


# --- reading ----------------------------------------------------------------------------------------------
def test_ls_stat_cat(gm, work):
    mnt, guest = work
    (guest / "a.txt").write_text("hello\n")
    (guest / "sub").mkdir()
    os.chmod(guest / "a.txt", 0o640)
    os.utime(guest / "a.txt", (1_600_000_000, 1_600_000_000))
    out = run("ls", "-la", mnt).stdout
    assert re.search(r"-rw-r----- +1 .* 6 .* a\.txt", out), out
    assert re.search(r"drwx.* sub", out), out
    assert re.search(r"^d.* \.$", out, re.M) and re.search(r"^d.* \.\.$", out, re.M), out
    st = os.stat(mnt / "a.txt")
    assert (st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime), st.st_nlink) == (6, 0o640, 1_600_000_000, 1)
    assert os.stat(mnt / "sub").st_nlink >= 2
    assert os.stat(mnt / "a.txt").st_ino == st.st_ino  # stable while known
    assert run("cat", mnt / "a.txt").stdout == "hello\n"
    assert run("stat", "-c", "%s %a", mnt / "a.txt").stdout.split() == ["6", "640"]


def test_top_level_lists_vms(gm):
    assert "vm1" in os.listdir(gm.mp)
    assert stat.S_ISDIR(os.stat(gm.vm).st_mode)
    assert errno_of(os.stat, gm.mp / "no-such-vm") == errno.ENOENT


def test_second_ls_within_ttl_is_free(gm, work):
    mnt, guest = work
    for i in range(30):
        (guest / f"f{i}").write_text("x" * i)
    run("ls", "-l", mnt)
    gm.reset_stats()
    out = run("ls", "-l", mnt).stdout
    assert out.count("\n") == 31
    assert calls(gm.stats()) == 0, gm.stats()


def test_ls_costs_the_listing_not_a_call_per_file(gm, work):
    mnt, guest = work
    for i in range(40):
        (guest / f"f{i}").write_text("x")
    gm.reset_stats()
    run("ls", "-l", mnt)
    n = calls(gm.stats())
    if gm.api == "rest":
        assert n <= 40 + 5  # REST listings lack mode/owner/times: one stat per entry, once
    else:
        assert n <= 5, gm.stats()


def test_forget_frees_inodes_and_lookups_stay_honest(gm, work):
    mnt, guest = work
    for i in range(300):
        (guest / f"f{i}").write_text(str(i))

    def used():
        s = os.statvfs(mnt)
        return s.f_files - s.f_ffree

    before = used()
    assert len(os.listdir(mnt)) == 300  # readdirplus: each entry is a lookup
    assert used() >= before + 300
    subprocess.run(["sh", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], timeout=30, check=True)
    deadline = time.monotonic() + 10
    while used() > before + 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert used() <= before + 50, (before, used())
    assert (mnt / "f7").read_text() == "7"  # evicted inodes come back under new lookups
    assert len(os.listdir(mnt)) == 300


def test_unicode_and_spaces(gm, work):
    mnt, guest = work
    names = ["with space.txt", "ünïcödé €.txt", "日本語", "a'b\"c"]
    for n in names:
        (mnt / n).write_text(n)
    assert sorted(os.listdir(guest)) == sorted(names)
    for n in names:
        assert (guest / n).read_text() == n
        assert (mnt / n).read_text() == n


def test_big_directory(gm, work):
    mnt, guest = work
    for i in range(5000):
        (guest / f"entry-{i:05d}").touch()
    gm.reset_stats()
    names = os.listdir(mnt)
    assert len(names) == 5000 and len(set(names)) == 5000
    assert calls(gm.stats()) <= 15, gm.stats()  # paged listing calls only
    if gm.api == "rest":
        return  # REST listings lack attributes: `ls -l` costs a stat per entry (see test_ls_costs_...)
    out = run("ls", "-l", mnt, timeout=120).stdout
    assert out.count("entry-") == 5000


# --- writing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_cp_in_and_out(gm, work, tmp_path, size):
    mnt, guest = work
    src = tmp_path / "src"
    src.write_bytes(os.urandom(size))
    run("cp", src, mnt / "copy")
    assert sha256(guest / "copy") == sha256(src)
    run("cp", mnt / "copy", tmp_path / "back")
    assert sha256(tmp_path / "back") == sha256(src)
    assert os.stat(mnt / "copy").st_size == size


def test_cp_a_tree(gm, work, tmp_path):
    mnt, guest = work
    tree = tmp_path / "tree"
    for d in ["a", "a/b", "c"]:
        (tree / d).mkdir(parents=True)
    for i, f in enumerate(["a/1", "a/b/2", "c/3", "4"]):
        (tree / f).write_bytes(os.urandom(1000 * i))
        os.chmod(tree / f, 0o600 + i)
        os.utime(tree / f, (1_500_000_000 + i, 1_500_000_000 + i))
    run("cp", "-a", tree, mnt / "tree")
    for f in ["a/1", "a/b/2", "c/3", "4"]:
        g, s, m = os.stat(guest / "tree" / f), os.stat(tree / f), os.stat(mnt / "tree" / f)
        assert sha256(guest / "tree" / f) == sha256(tree / f)
        assert stat.S_IMODE(g.st_mode) == stat.S_IMODE(s.st_mode) == stat.S_IMODE(m.st_mode), f
        assert int(g.st_mtime) == int(s.st_mtime) == int(m.st_mtime), f


def test_rsync_twice_transfers_nothing(gm, work, tmp_path):
    mnt, guest = work
    src = tmp_path / "src"
    for i in range(500):
        d = src / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 7))
    first = run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/dst/", timeout=300).stdout
    assert "Number of regular files transferred: 500" in first, first
    for i in (0, 250, 499):
        assert sha256(guest / "dst" / f"d{i % 10}" / f"f{i}") == sha256(src / f"d{i % 10}" / f"f{i}")
    second = run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/dst/", timeout=300).stdout
    assert "Number of regular files transferred: 0" in second, second
    assert not [p for p in (guest / "dst").rglob(".*")], "rsync temp files left behind"


VIM_VARIANTS = {
    "defaults": [],
    "backupcopy-yes": ["set backupcopy=yes"],
    "rename-backup": ["set backup backupcopy=no"],
    "no-swap-no-backup": ["set nobackup nowritebackup noswapfile"],
}


@pytest.mark.parametrize("variant", list(VIM_VARIANTS))
def test_vim_edit(gm, work, variant):
    mnt, guest = work
    (guest / "f.txt").write_text("aaa\nbab\n")
    cmds = []
    for c in VIM_VARIANTS[variant] + ["%s/a/b/g", "wq"]:
        cmds += ["-c", c]
    run("vim", "-es", "-N", "-u", "NONE", "-i", "NONE", *cmds, mnt / "f.txt", timeout=60)
    assert (guest / "f.txt").read_text() == "bbb\nbbb\n"
    assert (mnt / "f.txt").read_text() == "bbb\nbbb\n"
    # twice in a row
    cmds = []
    for c in VIM_VARIANTS[variant] + ["%s/b/c/g", "w", "w", "q"]:
        cmds += ["-c", c]
    run("vim", "-es", "-N", "-u", "NONE", "-i", "NONE", *cmds, mnt / "f.txt", timeout=60)
    assert (guest / "f.txt").read_text() == "ccc\nccc\n"
    leftovers = [p.name for p in guest.iterdir() if p.name not in ("f.txt", "f.txt~")]
    assert leftovers == [], leftovers


def test_sed_in_place(gm, work):
    mnt, guest = work
    (guest / "conf").write_text("key=old\nother=1\n")
    os.chmod(guest / "conf", 0o600)
    run("sed", "-i", "s/old/new/", mnt / "conf")
    assert (guest / "conf").read_text() == "key=new\nother=1\n"
    assert stat.S_IMODE(os.stat(guest / "conf").st_mode) == 0o600
    assert sorted(os.listdir(guest)) == ["conf"]


def test_append(gm, work):
    mnt, guest = work
    (guest / "log").write_text("one\n")
    run("sh", "-c", f"echo two >> '{mnt}/log'; echo three >> '{mnt}/log'")
    assert (guest / "log").read_text() == "one\ntwo\nthree\n"
    with open(mnt / "log", "a") as f:
        f.write("four\n")
        f.flush()
        assert os.stat(mnt / "log").st_size == len("one\ntwo\nthree\nfour\n")  # own writes visible before close
    assert (mnt / "log").read_text() == "one\ntwo\nthree\nfour\n"


def test_write_without_trunc_keeps_other_bytes(gm, work):
    mnt, guest = work
    (guest / "f").write_bytes(b"0123456789")
    fd = os.open(mnt / "f", os.O_WRONLY)
    try:
        os.pwrite(fd, b"ab", 3)
    finally:
        os.close(fd)
    assert (guest / "f").read_bytes() == b"012ab56789"
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"xy")
    finally:
        os.close(fd)
    assert (guest / "f").read_bytes() == b"xy"


def test_exclusive_create(gm, work):
    mnt, guest = work
    (guest / "exists").write_text("x")
    assert errno_of(os.open, mnt / "exists", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    assert errno_of(os.open, mnt / "missing-dir" / "f", os.O_WRONLY | os.O_CREAT) == errno.ENOENT
    fd = os.open(mnt / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    assert (guest / "new").read_bytes() == b""
    assert stat.S_IMODE(os.stat(guest / "new").st_mode) == 0o640


def test_negative_lookup_dropped_on_create(gm, work):
    mnt, guest = work
    assert not (mnt / "later").exists()
    assert not (mnt / "later").exists()
    (mnt / "later").write_text("now")
    assert (mnt / "later").exists() and (mnt / "later").read_text() == "now"
    assert (guest / "later").read_text() == "now"


def test_unlinked_while_open_is_never_uploaded(gm, work):
    mnt, guest = work
    f = open(mnt / "tmp", "w")
    try:
        f.write("data")
        f.flush()
        os.unlink(mnt / "tmp")
    finally:
        f.close()
    assert not (guest / "tmp").exists()
    assert not (mnt / "tmp").exists()


def test_rename_of_open_dirty_file_moves_the_upload(gm, work):
    mnt, guest = work
    fd = os.open(mnt / ".tmp.x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"first ")
        os.fchmod(fd, 0o751)
        os.rename(mnt / ".tmp.x", mnt / "final")
        os.write(fd, b"second")
    finally:
        os.close(fd)
    assert sorted(os.listdir(guest)) == ["final"]
    assert (guest / "final").read_bytes() == b"first second"
    assert stat.S_IMODE(os.stat(guest / "final").st_mode) == 0o751


def test_attributes_on_dirty_file_survive_upload(gm, work):
    mnt, guest = work
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"abc")
        os.fchmod(fd, 0o604)
        os.utime(fd, ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
    finally:
        os.close(fd)
    g = os.stat(guest / "f")
    assert (stat.S_IMODE(g.st_mode), int(g.st_mtime)) == (0o604, 1_400_000_000)
    m = os.stat(mnt / "f")
    assert (stat.S_IMODE(m.st_mode), int(m.st_mtime), m.st_size) == (0o604, 1_400_000_000, 3)


def test_chmod_chown_touch_truncate(gm, work):
    mnt, guest = work
    (guest / "f").write_bytes(b"0123456789")
    run("chmod", "700", mnt / "f")
    assert stat.S_IMODE(os.stat(guest / "f").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == 0o700
    run("chown", "12:34", mnt / "f")
    g = os.stat(guest / "f")
    assert (g.st_uid, g.st_gid) == (12, 34)
    assert (os.stat(mnt / "f").st_uid, os.stat(mnt / "f").st_gid) == (12, 34)
    run("touch", "-d", "2001-02-03 04:05:06 UTC", mnt / "f")
    assert int(os.stat(guest / "f").st_mtime) == 981173106
    assert int(os.stat(mnt / "f").st_mtime) == 981173106
    run("truncate", "-s", "4", mnt / "f")
    assert (guest / "f").read_bytes() == b"0123"
    run("truncate", "-s", "6", mnt / "f")
    assert (guest / "f").read_bytes() == b"0123\0\0"
    assert os.stat(mnt / "f").st_size == 6
    assert stat.S_IMODE(os.stat(guest / "f").st_mode) == 0o700  # the upload of the truncate kept the mode
    run("truncate", "-s", "0", mnt / "f")
    assert (guest / "f").read_bytes() == b""


def test_mkdir_p_rm_rf(gm, work):
    mnt, guest = work
    run("mkdir", "-p", mnt / "a/b/c")
    assert (guest / "a/b/c").is_dir()
    os.mkdir(mnt / "m", 0o751)
    assert stat.S_IMODE(os.stat(guest / "m").st_mode) == 0o751
    (mnt / "a/b/c/f").write_text("x")
    (mnt / "a/g").write_text("y")
    run("rm", "-rf", mnt / "a")
    assert not (guest / "a").exists()
    assert not (mnt / "a").exists()


def test_mv_files_and_dirs(gm, work):
    mnt, guest = work
    (guest / "f1").write_text("one")
    (guest / "f2").write_text("two")
    (guest / "d1").mkdir()
    (guest / "d1/inner").write_text("in")
    (guest / "empty").mkdir()
    run("mv", mnt / "f1", mnt / "f3")
    assert (guest / "f3").read_text() == "one" and not (guest / "f1").exists()
    run("mv", "-f", mnt / "f3", mnt / "f2")  # onto an existing file
    assert (guest / "f2").read_text() == "one" and (mnt / "f2").read_text() == "one"
    os.rename(mnt / "d1", mnt / "empty")  # onto an existing empty directory
    assert (guest / "empty/inner").read_text() == "in" and not (guest / "d1").exists()
    assert (mnt / "empty/inner").read_text() == "in"
    run("mv", mnt / "empty", mnt / "d2")
    assert sorted(os.listdir(mnt)) == ["d2", "f2"]
    assert (mnt / "d2/inner").read_text() == "in"
    run("mv", mnt / "f2", mnt / "d2")  # into a directory
    assert (guest / "d2/f2").read_text() == "one"


def test_errno_of_failures(gm, work):
    mnt, guest = work
    (guest / "file").write_text("x")
    (guest / "full").mkdir()
    (guest / "full/x").write_text("x")
    (guest / "dir").mkdir()
    (guest / "dir/sub").mkdir()
    assert errno_of(os.stat, mnt / "nope") == errno.ENOENT
    assert errno_of(open, mnt / "nope") == errno.ENOENT
    assert errno_of(os.rmdir, mnt / "full") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, mnt / "file") == errno.ENOTDIR
    assert errno_of(os.unlink, mnt / "dir") == errno.EISDIR
    assert errno_of(os.mkdir, mnt / "dir") == errno.EEXIST
    assert errno_of(os.listdir, mnt / "file") == errno.ENOTDIR
    assert errno_of(os.rename, mnt / "dir", mnt / "dir/sub/into") == errno.EINVAL
    assert errno_of(os.rename, mnt / "dir", mnt / "full") == errno.ENOTEMPTY
    assert errno_of(os.rename, mnt / "file", mnt / "dir") == errno.EISDIR
    assert errno_of(os.rename, mnt / "dir", mnt / "file") == errno.ENOTDIR
    assert errno_of(os.symlink, "target", mnt / "link") == errno.EPERM
    assert errno_of(os.link, mnt / "file", mnt / "hard") == errno.EPERM
    assert errno_of(os.mkfifo, mnt / "fifo") == errno.EPERM
    assert errno_of(os.mkdir, mnt / "nope/deeper") == errno.ENOENT
    assert errno_of(os.mkdir, gm.mp / "new-vm") == errno.EPERM
    # the mount still serves
    assert (mnt / "file").read_text() == "x"
    assert sorted(os.listdir(mnt)) == ["dir", "file", "full"]


def test_statfs_and_fsync_dir(gm, work):
    mnt, _ = work
    s = os.statvfs(mnt)
    assert s.f_namemax == 255 and s.f_bavail * s.f_frsize > 1 << 40
    run("df", mnt)
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_own_writes_visible_at_once(gm, work):
    mnt, guest = work
    (guest / "f").write_text("old")
    assert (mnt / "f").read_text() == "old"
    (mnt / "f").write_text("newer content")
    assert os.stat(mnt / "f").st_size == len("newer content")
    assert (mnt / "f").read_text() == "newer content"
    (mnt / "g").write_text("x")
    assert "g" in os.listdir(mnt)
    os.unlink(mnt / "g")
    assert "g" not in os.listdir(mnt)


def test_changes_on_guest_show_after_ttl_and_own_mtimes_stay(gm, work):
    mnt, guest = work
    (guest / "f").write_text("v1")
    assert (mnt / "f").read_text() == "v1"
    (guest / "f").write_text("version 2")
    os.utime(guest / "f", (time.time() + 5, time.time() + 5))
    (mnt / "written").write_text("by us")
    (mnt / "touched").write_text("by us")
    os.utime(mnt / "touched", ns=(1_300_000_000_123_456_789, 1_300_000_000_123_456_789))
    before = {n: os.stat(mnt / n).st_mtime_ns for n in ("written", "touched")}
    time.sleep(5.5)  # past every TTL of the test config: now the guest's records show
    assert (mnt / "f").read_text() == "version 2"  # no stale page cache (keep_cache only when unchanged)
    after = {n: os.stat(mnt / n).st_mtime_ns for n in ("written", "touched")}
    assert after == before  # the mtime we showed is the one the guest keeps (whole seconds)
    assert before["touched"] == 1_300_000_000_000_000_000
    assert int(os.stat(guest / "touched").st_mtime) == 1_300_000_000


# --- transfers and their failures ---------------------------------------------------------------------------
def test_download_on_first_read_not_on_open(gm, work):
    mnt, guest = work
    (guest / "f").write_bytes(b"x" * 100_000)
    os.stat(mnt / "f")
    gm.reset_stats()
    os.close(os.open(mnt / "f", os.O_RDONLY))
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)  # truncated to empty: uploaded, never downloaded
    s = gm.stats()
    assert s.get("InitiateFileTransferFromGuest", 0) == 0 and s.get("guestFile.GET", 0) == 0, s
    assert (guest / "f").read_bytes() == b""
    (guest / "g").write_bytes(b"y" * 100_000)
    gm.reset_stats()
    with open(mnt / "g", "rb") as f:
        assert f.read(10) == b"y" * 10
    assert gm.stats().get("InitiateFileTransferFromGuest", 0) == 1, gm.stats()


def test_upload_once_per_close_of_last_writer_and_on_fsync(gm, work):
    mnt, guest = work
    gm.reset_stats()
    a = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    b = os.open(mnt / "f", os.O_WRONLY)
    os.write(a, b"aaaa")
    os.pwrite(b, b"bb", 4)
    os.close(a)
    assert gm.stats().get("InitiateFileTransferToGuest", 0) == 0
    os.fsync(b)
    assert gm.stats().get("InitiateFileTransferToGuest", 0) == 1
    assert (guest / "f").read_bytes() == b"aaaabb"
    os.pwrite(b, b"c", 6)
    os.close(b)
    assert gm.stats().get("InitiateFileTransferToGuest", 0) == 2
    assert (guest / "f").read_bytes() == b"aaaabbc"
    gm.reset_stats()
    with open(mnt / "f", "rb") as f:  # reading does not upload
        f.read()
    assert gm.stats().get("InitiateFileTransferToGuest", 0) == 0


def test_upload_failure_is_returned_and_recovered(gm, work):
    mnt, guest = work
    (guest / "f").write_text("old")
    gm.fault("InitiateFileTransferToGuest", "NoDiskSpace", 1)
    f = open(mnt / "f", "w")
    f.write("precious new content")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.ENOSPC
    assert (guest / "f").read_text() == "old"
    rec = gm.root.parent / "recovered"
    kept = [p for p in rec.rglob("*") if p.is_file() and p.name.startswith("f.")]
    assert [p.read_text() for p in kept] == ["precious new content"], list(rec.rglob("*"))
    lines = [line for line in gm.log().splitlines() if str(kept[0]) in line]
    assert len(lines) == 1 and "f" in lines[0]
    assert (mnt / "f").read_text() == "old"  # the mount still serves, and shows the guest's truth
    (mnt / "f").write_text("retry")
    assert (guest / "f").read_text() == "retry"


def test_failed_download_gives_errno_not_a_short_file(gm, work):
    mnt, guest = work
    data = os.urandom(3 << 20)
    (guest / "f").write_bytes(data)
    gm.fault("guestFile.GET", "TransferAborted", 2)  # once is renewed (tests/test_reliability_faults.py)
    with open(mnt / "f", "rb") as f:
        with pytest.raises(OSError) as e:
            f.read()
    assert e.value.errno == errno.EIO
    with open(mnt / "f", "rb") as f:  # a new open downloads again
        assert f.read() == data


def test_powered_off_vm_gives_ehostdown(gm, work):
    mnt, guest = work
    (guest / "f").write_text("x")
    gm.power("poweredOff")
    try:
        time.sleep(2.2)  # the VM list's TTL in the test config
        assert "vm1" in os.listdir(gm.mp)
        assert errno_of(os.listdir, mnt) == errno.EHOSTDOWN
        assert errno_of(os.stat, mnt / "f") == errno.EHOSTDOWN
        assert errno_of(os.stat, mnt / "other") == errno.EHOSTDOWN
    finally:
        gm.power("poweredOn")
    deadline = time.monotonic() + 10
    while True:
        try:
            assert (mnt / "f").read_text() == "x"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_reader_stopping_early_leaves_no_spool(gm, work, tmp_path):
    mnt, guest = work
    (guest / "big").write_bytes(os.urandom(64 << 20))
    t0 = time.monotonic()
    out = subprocess.run(["head", "-c", "100", str(mnt / "big")], capture_output=True, timeout=60)
    assert len(out.stdout) == 100
    assert time.monotonic() - t0 < 10
    assert wait_for(lambda: not gm.spool_files(), 10), gm.spool_files()


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_200_mib_in_and_out_with_flat_memory(gm, work, tmp_path):
    if gm.api != "vi-json":
        pytest.skip("200 MiB copies run in one dialect to keep the run short")
    mnt, guest = work
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    t0 = time.monotonic()
    run("cp", src, mnt / "big", timeout=300)
    t_in = time.monotonic() - t0
    assert sha256(guest / "big") == sha256(src)
    run("cp", mnt / "big", tmp_path / "back", timeout=300)
    assert sha256(tmp_path / "back") == sha256(src)
    print(f"200 MiB in {t_in:.1f}s, out {time.monotonic() - t0 - t_in:.1f}s")
    status = Path(f"/proc/{gm.proc.pid}/status").read_text()
    hwm_kib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    assert hwm_kib < 150 * 1024, f"mount's peak RSS {hwm_kib} KiB"


# --- randomized model test -------------------------------------------------------------------------------------
MODEL_SECONDS = 8.0  # per dialect


def test_random_operations_match_a_local_model(gm, work, tmp_path):
    """Random writes, reads, truncates and reopens on one file through the mount and on a local model file; reads
    and the guest's copy after each close must match the model."""
    import random

    mnt, guest = work
    seed = int(os.environ.get("GUESTFS_MODEL_SEED", "20261123"))
    rng = random.Random(seed)
    model = ModelSteps(rng, seed)
    steps, check = model.steps, model.check
    model_path = tmp_path / "model"
    model_path.write_bytes(b"")
    (guest / "f").write_bytes(b"")

    deadline = time.monotonic() + MODEL_SECONDS
    while time.monotonic() < deadline:
        flags = rng.choice([os.O_RDWR, os.O_RDWR | os.O_TRUNC, os.O_RDWR | os.O_APPEND])
        fd, md = os.open(mnt / "f", flags), os.open(model_path, flags)
        steps.append(("open", flags))
        try:
            model.run(fd, md, rng.randint(1, 25))
        finally:
            os.close(fd)
            os.close(md)
        steps.append(("close",))
        check(sha256(guest / "f") == sha256(model_path), "guest copy after close")
        check(os.stat(mnt / "f").st_size == model_path.stat().st_size, "size after close")
