"""Bad input through a real mount (issue 7, "Bad input"): names with spaces, newlines, unicode, exactly 255 bytes,
over 255 bytes and not UTF-8; paths past a Linux guest's PATH_MAX; a listing of 20,000 entries; a vCenter that
answers HTML, truncated JSON, wrong types, or a transfer GET with a 4 GiB Content-Length lie, at start and while
mounted. Each one ends in a clear errno or one clear line, never a crash, a hang or a memory blow-up.

Covered elsewhere and not repeated here: test_mount.py::test_unicode_and_spaces and ::test_big_directory (5,000
entries, guest calls of `ls`), test_client.py::test_nonsense_from_vcenter_is_a_clear_protocol_error and
::test_a_content_length_lie_ends_in_an_error_without_memory_growth (the same answers at the client's level).

Figures (times, VmHWM of the mount, guest calls) are printed as `FIGURES ...` lines: `pytest -s` shows them.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.badserver import Answer, bad_server
from tests.helpers.configmount import config_text, failed_start, mounted_with
from tests.helpers.lyingproxy import lying_proxy
from tests.helpers.mounting import is_mounted, wait_until
from tests.helpers.mountfs import mounted_guestfs
from tests.helpers.simulator import RestCaller, ViCaller, running_simulator
from tests.helpers.soapanswers import billion_laughs, envelope, fault

APIS = ["vi-json", "soap", "rest"]
_dirs = itertools.count(1)


def run(*cmd, timeout=120, input=None) -> subprocess.CompletedProcess:
    p = subprocess.run([os.fsencode(c) if isinstance(c, (bytes, Path)) else c for c in cmd], timeout=timeout,
                       capture_output=True, input=input)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}: {p.stderr!r}"
    return p


def calls(stats: dict) -> int:
    """Guest operations and transfers (not logins or inventory queries)."""
    return sum(v for k, v in stats.items() if k.endswith("InGuest") or k.startswith(("guestFile", "InitiateFile")))


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as e:
        fn(*args, **kwargs)
    return e.value.errno


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM"))}


@pytest.fixture(scope="module", params=APIS)
def gm(request):
    # a short root: the simulator's host path is its root plus the guest path, and the deep-path test goes near
    # a Linux guest's PATH_MAX (4095 bytes)
    tmp = Path(tempfile.mkdtemp(prefix="gfs-", dir="/tmp"))
    try:
        with mounted_guestfs(tmp, request.param) as m:
            yield m
            assert "Traceback" not in m.log(), m.log()[-3000:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def work(gm):
    """A fresh, short-named directory for one test: (its path in the mount, its path on the guest)."""
    name = f"t{next(_dirs)}"
    (gm.guest / name).mkdir()
    return gm.vm / name, gm.guest / name


# ------------------------------------------------------------------------------------------------------ names
NAMES = {
    "space": "with space.txt",
    "newline": "new\nline",
    "tab": "tab\there",
    "edges": " lead and trail ",
    "dash": "-starts-with-dash",
    "quotes": "it's \"quoted\" *?[]",
    "unicode": "ünïcödé € 日本語 😀",
    "zero width": "\u200bzero width",
    "255 ascii": "a" * 255,
    "255 utf-8 2-byte": "é" * 127 + "x",
    "255 utf-8 3-byte": "日" * 85,
    "255 utf-8 4-byte": "😀" * 63 + "xyz",
}
assert all(len(NAMES[k].encode()) == 255 for k in NAMES if k.startswith("255"))


def test_names_with_spaces_newlines_unicode_and_255_bytes(gm, work, tmp_path):
    """cp in, ls/find, stat, cat, rm: each name arrives on the guest as it is and comes back the same."""
    mnt, guest = work
    for key, name in NAMES.items():
        src = tmp_path / f"src-{len(os.listdir(tmp_path))}"
        src.write_text(f"content of {key}\n")
        run("cp", src, mnt / name)
    assert sorted(os.listdir(guest)) == sorted(NAMES.values())
    for key, name in NAMES.items():
        assert (guest / name).read_text() == f"content of {key}\n"
    # what programs see: find's NUL-separated names, ls's escaped lines, stat's size, cat's bytes
    found = run("find", mnt, "-mindepth", "1", "-print0").stdout.split(b"\0")[:-1]
    assert sorted(os.fsdecode(f).removeprefix(f"{mnt}/") for f in found) == sorted(NAMES.values())
    assert len(run("ls", "-1", "-b", mnt).stdout.splitlines()) == len(NAMES)
    assert len(run("ls", "-l", "-b", mnt).stdout.splitlines()) == len(NAMES) + 1  # + "total"
    for key, name in NAMES.items():
        assert run("stat", "-c", "%s", mnt / name).stdout == f"{len(f'content of {key}') + 1}\n".encode()
        assert run("cat", mnt / name).stdout == f"content of {key}\n".encode()
    for name in NAMES.values():
        run("rm", "--", mnt / name)
    assert os.listdir(guest) == [] and os.listdir(mnt) == []


TOO_LONG = {
    "256 ascii": "b" * 256,
    "1000 ascii": "c" * 1000,  # the kernel passes FUSE names of up to 1024 bytes
    "1025 ascii": "d" * 1025,  # past FUSE's own limit: the kernel answers itself
    "768 bytes, 256 CJK": "日" * 256,  # past 255 UTF-16 units too: no guest holds it
}


@pytest.mark.parametrize("key", list(TOO_LONG))
def test_names_over_255_bytes_are_enametoolong_without_a_guest_call(gm, work, key):
    mnt, guest = work
    (mnt / "exists").write_text("x")
    name = TOO_LONG[key]
    gm.reset_stats()
    got = {
        "create": errno_of(os.open, mnt / name, os.O_CREAT | os.O_WRONLY, 0o644),
        "open": errno_of(os.open, mnt / name, os.O_RDONLY),
        "mkdir": errno_of(os.mkdir, mnt / name),
        "stat": errno_of(os.stat, mnt / name),
        "rename": errno_of(os.rename, mnt / "exists", mnt / name),
        "unlink": errno_of(os.unlink, mnt / name),
    }
    touch = subprocess.run(["touch", mnt / name], capture_output=True, text=True, timeout=30)
    assert got == dict.fromkeys(got, errno.ENAMETOOLONG), {k: errno.errorcode[v] for k, v in got.items()}
    assert touch.returncode == 1 and "File name too long" in touch.stderr
    assert calls(gm.stats()) == 0, gm.stats()
    assert os.listdir(mnt) == ["exists"] and os.listdir(guest) == ["exists"]  # the mount is up, nothing changed


def test_a_long_name_only_the_guest_can_judge_is_enametoolong_from_the_guest(gm, work):
    """256 bytes but 128 UTF-16 units: too long for a Linux guest, fine on a Windows one; the guest answers."""
    mnt, guest = work
    name = "é" * 128
    gm.reset_stats()
    assert errno_of(os.open, mnt / name, os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, mnt / name) == errno.ENAMETOOLONG
    assert calls(gm.stats()) >= 1, gm.stats()  # the guest's FileNameTooLong / PATH_TOO_LONG, mapped
    assert os.listdir(mnt) == [] and os.listdir(guest) == []


def test_a_name_that_is_not_utf8_is_eilseq_without_a_guest_call(gm, work):
    mnt, guest = work
    (mnt / "exists").write_text("x")
    name = os.fsencode(mnt) + b"/bad\xff\xfename"
    gm.reset_stats()
    got = {
        "create": errno_of(os.open, name, os.O_CREAT | os.O_WRONLY, 0o644),
        "stat": errno_of(os.stat, name),
        "mkdir": errno_of(os.mkdir, name),
        "rename": errno_of(os.rename, mnt / "exists", name),
    }
    assert got == dict.fromkeys(got, errno.EILSEQ), {k: errno.errorcode[v] for k, v in got.items()}
    assert calls(gm.stats()) == 0, gm.stats()
    assert os.listdir(guest) == ["exists"]
    assert "Traceback" not in gm.log()  # it was EIO with a traceback from the JSON encoder


def test_a_name_with_a_control_character(gm, work):
    """\x01 is a valid byte of a Linux name: VI/JSON and REST carry it; XML 1.0 cannot, not even as a character
    reference, so SOAP refuses the name with EINVAL before any guest call: a written file's bytes are kept in the
    recovery dir, and the mount stays up."""
    mnt, guest = work
    name = "ctl\x01char"
    if gm.api != "soap":
        (mnt / name).write_text("x")
        assert (guest / name).read_text() == "x" and os.listdir(mnt) == [name]
        return
    assert os.listdir(mnt) == []
    gm.reset_stats()
    f = open(mnt / name, "w")  # a name the listing lacks: created locally, uploaded at close
    f.write("precious bytes\n")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EINVAL
    copies = [p for p in (gm.log_path.parent / "recovered").rglob("ctl*") if p.is_file()]
    assert [p.read_text() for p in copies] == ["precious bytes\n"]
    assert errno_of(os.mkdir, mnt / name) == errno.EINVAL
    # no call carried the name; the directory's record may be asked for again (a failed create drops its times)
    assert set(gm.stats()) <= {"ListFilesInGuest"}, gm.stats()
    assert "ctl" not in (gm.log_path.parent / "sim.log").read_text(errors="replace")
    assert os.listdir(guest) == []
    (mnt / "fine").write_text("y")  # the mount is up
    assert (guest / "fine").read_text() == "y"


def test_a_failed_upload_of_a_255_byte_name_keeps_its_bytes(gm, work):
    """The recovered copy's name is the guest name plus a time stamp: past 255 bytes, so it gets a short one."""
    mnt, guest = work
    name = "r" * 255
    recovered = gm.log_path.parent / "recovered"
    gm.fault("InitiateFileTransferToGuest", "NoDiskSpace", times=1)
    f = open(mnt / name, "w")
    f.write("precious bytes\n")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.ENOSPC
    copies = [p for p in (recovered / "vm1").iterdir() if p.name.startswith("r" * 100 + "-")]
    assert len(copies) == 1, list((recovered / "vm1").iterdir())
    assert copies[0].read_text() == "precious bytes\n"
    assert (copies[0].stat().st_mode & 0o777, recovered.stat().st_mode & 0o777) == (0o600, 0o700)
    assert f"kept in {copies[0]}" in gm.log()
    # the fault was used up: writing the name again works. The kernel forgets the failed file's entry
    # asynchronously (pyfuse3.invalidate_entry_async), so allow it a moment
    assert wait_until(lambda: _writes(mnt / name, "second try\n"), 2)
    assert (guest / name).read_text() == "second try\n"


def _writes(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
    except FileNotFoundError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ deep paths
def test_paths_past_the_guest_path_max_are_enametoolong(gm, work):
    """A Linux guest takes paths of up to 4095 bytes. Deeper than that (reached with relative paths: the kernel's
    own PATH_MAX counts only what one call names) mkdir, create, stat and rename give ENAMETOOLONG at once,
    without a guest call, and a file just inside the limit works end to end."""
    mnt, guest = work
    guest_path = "/" + guest.name  # the guest path of the directory `fd` is open on
    comp = "d" * 200
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(guest_path) + 1 + len(comp) < 3900:
            os.mkdir(comp, dir_fd=fd)
            deeper = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, guest_path = deeper, f"{guest_path}/{comp}"
        # a file just inside (4050 bytes: the simulator's host adds its root to the path, and its own PATH_MAX
        # is 4095 too): write through the mount, read back through the mount and on the guest
        fname = "f" * (4050 - len(guest_path) - 1)
        out = os.open(fname, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(out, b"deep\n")
        os.close(out)
        assert len(f"{guest_path}/{fname}") == 4050
        assert (guest.parent / f"{guest_path}/{fname}".lstrip("/")).read_bytes() == b"deep\n"
        back = os.open(fname, os.O_RDONLY, dir_fd=fd)
        assert os.read(back, 100) == b"deep\n"
        os.close(back)
        # a name that makes the guest path 4096 bytes, one more than the limit
        name = "x" * (4096 - len(guest_path) - 1)
        assert len(f"{guest_path}/{name}".encode()) == 4096
        gm.reset_stats()
        got = {
            "create": errno_of(os.open, name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd),
            "mkdir": errno_of(os.mkdir, name, dir_fd=fd),
            "stat": errno_of(os.stat, name, dir_fd=fd),
            "rename": errno_of(os.rename, fname, name, src_dir_fd=fd, dst_dir_fd=fd),
            "open": errno_of(os.open, name, os.O_RDONLY, dir_fd=fd),
        }
        assert got == dict.fromkeys(got, errno.ENAMETOOLONG), {k: errno.errorcode[v] for k, v in got.items()}
        assert calls(gm.stats()) == 0, gm.stats()
        assert os.listdir(fd) == [fname]
        print(f"FIGURES deep path {gm.api}: {guest_path.count('/') + 1} levels, a 4050-byte guest path works; "
              "4096 bytes: ENAMETOOLONG, 0 guest calls")
    finally:
        os.close(fd)
    assert os.listdir(mnt) == [comp]  # the mount is up


def test_the_simulated_guest_refuses_paths_past_its_path_max(sim):
    """The simulator enforces a Linux guest's limits itself, not only where its host's PATH_MAX cuts in."""
    path = "/" + "a/" * 2048  # 4097 bytes of short names
    vi = ViCaller(sim)
    rest = RestCaller(sim)
    try:
        r = vi.guest("ListFilesInGuest", "alpha", filePath=path)
        assert r.status_code == 500 and r.json()["_typeName"] == "FileNameTooLong"
        assert "longer than 4095" in r.json()["faultMessage"][0]["message"]
        r = vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/" + "n" * 256, createParentDirectories=False)
        assert r.status_code == 500 and r.json()["_typeName"] == "FileNameTooLong"
        r = rest.fs("alpha", "/files", "list", path=path)
        assert r.status_code == 400 and r.json()["data"]["reason"] == "PATH_TOO_LONG"
    finally:
        vi.close()
        rest.close()


# ------------------------------------------------------------------------------------------- 20,000 entries
def test_a_listing_of_20000_entries(gm, work, request):
    """ls, ls -l and os.scandir of 20,000 files: the right count, paged listing calls only, bounded time and
    memory. REST listings carry no attributes, so its `ls -l` costs a stat per entry: only with --run-slow."""
    mnt, guest = work
    n = 20_000
    for i in range(n):
        os.close(os.open(guest / f"entry-{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
    pid = gm.proc.pid
    before = memory_kib(pid)
    figures = []

    def timed(label, fn):
        gm.reset_stats()
        started = time.monotonic()
        result = fn()
        took = time.monotonic() - started
        figures.append(f"{label} {took:.2f} s, {calls(gm.stats())} guest calls")
        assert took < 90, f"{label} took {took:.1f} s"
        return result

    lines = timed("ls (cold)", lambda: run("ls", "-1", mnt).stdout.splitlines())
    assert len(lines) == n and len(set(lines)) == n
    assert calls(gm.stats()) <= n // 500 + 3, gm.stats()  # pages of 500 entries, nothing per entry
    with os.scandir(mnt) as it:
        entries = timed("os.scandir (warm)", lambda: [(e.name, e.is_file()) for e in it])
    assert len(entries) == n and all(is_file for _, is_file in entries)
    if gm.api != "rest" or request.config.getoption("--run-slow"):
        out = timed("ls -l", lambda: run("ls", "-l", mnt, timeout=600).stdout)
        assert out.count(b"entry-") == n
        if gm.api != "rest":
            assert calls(gm.stats()) <= n // 500 + 3, gm.stats()  # attributes come with the listing
    after = memory_kib(pid)
    grew_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(f"FIGURES listing {n} {gm.api}: " + "; ".join(figures) +
          f"; mount VmHWM {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MiB")
    assert grew_mib < 150, f"the mount's peak RSS grew by {grew_mib:.0f} MiB"
    shutil.rmtree(guest)


# --------------------------------------------------------------------------------------- a vCenter that lies
START_LIES = [
    ("vi-json", "/sdk/", Answer(200, b"<html><body>Service Unavailable</body></html>", "text/html"), "not JSON"),
    ("vi-json", "/sdk/", Answer(200, b'{"_typeName": "ServiceContent", "rootFo'), "not JSON"),
    ("vi-json", "/sdk/", Answer(200, b'{"_typeName": "ServiceContent", "sessionManager": 42}'), "sessionManager"),
    ("vi-json", "/sdk/", Answer(503, b"<html>maintenance</html>", "text/html"), "HTTP 503"),
    ("rest", "/api/", Answer(201, b"<html>login page</html>", "text/html"), "not JSON"),
    ("rest", "/api/", Answer(201, b'"b00db39f948d13'), "not JSON"),
    ("rest", "/api/", Answer(201, b'{"value": "b00db39f"}'), "session id"),
    ("soap", "/sdk", Answer(200, b"<html><body>Service Unavailable</body></html>", "text/html"), "not a SOAP envelope"),
    ("soap", "/sdk", Answer(200, envelope("RetrieveServiceContent", '<returnval><rootFolder type="Folder">g')[:-30],
                            "text/xml"), "not XML"),
    ("soap", "/sdk", Answer(200, b"<soapenv:Envelope><unclosed", "text/xml"), "not XML"),
    ("soap", "/sdk", Answer(200, billion_laughs("RetrieveServiceContent"), "text/xml"), "DTD"),
    ("soap", "/sdk", Answer(500, fault("FluxCapacitor", "the flux capacitor"), "text/xml"), "FluxCapacitor"),
    ("soap", "/sdk", Answer(503, b"<html>maintenance</html>", "text/html"), "HTTP 503"),
    ("auto", "/", Answer(200, b"<html>a login portal</html>", "text/html"), "not JSON"),
]


@pytest.mark.parametrize("api, prefix, answer, words", START_LIES,
                         ids=["vi-html", "vi-truncated", "vi-wrong-type", "vi-503-html", "rest-html",
                              "rest-truncated", "rest-wrong-type", "soap-html", "soap-truncated", "soap-bad-xml",
                              "soap-billion-laughs", "soap-unknown-fault", "soap-503-html", "auto-html"])
def test_a_vcenter_answering_nonsense_at_start_fails_the_mount_with_one_line(tmp_path, api, prefix, answer, words):
    with bad_server({prefix: answer}) as server:
        started = time.monotonic()
        done = failed_start(tmp_path, config_text(tmp_path, server.url, api, vcenter_extra='password = "pw"\n'))
        took = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1 and "failed:" in errors[0] and words in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not is_mounted(tmp_path / "mnt")
    assert took < 20


def _lies(api: str) -> list[tuple[str, str, bytes | None, Answer, str]]:
    """(what, path part, body part, answer, operation): nonsense for a listing, a transfer's initiate call and its
    GET. SOAP sends every call to POST /sdk: its lies are told by the method named in the request's body."""
    get_lie = ("GET: 4 GiB Content-Length lie", "/guestFile", None,
               Answer(200, b"x" * 1000, "application/octet-stream", content_length=4 << 30), "cat")
    if api == "soap":
        listing, initiate = b"<ListFilesInGuest ", b"<InitiateFileTransferFromGuest "
        xml = "text/xml; charset=utf-8"
        return [
            ("listing: HTML", "/sdk", listing, Answer(200, b"<html><body>Unavailable</body></html>", "text/html"), "ls"),
            ("listing: 500 HTML", "/sdk", listing, Answer(500, b"<html>Internal error</html>", "text/html"), "ls"),
            ("listing: bad XML", "/sdk", listing, Answer(200, b"<soapenv:Envelope xmlns:soapenv=<<", xml), "ls"),
            ("listing: truncated envelope", "/sdk", listing,
             Answer(200, envelope("ListFilesInGuest", "<returnval><files><path>a</path>")[:-60], xml), "ls"),
            ("listing: wrong types", "/sdk", listing,
             Answer(200, envelope("ListFilesInGuest", "<returnval><remaining>x</remaining></returnval>"), xml), "ls"),
            ("listing: wrong entry types", "/sdk", listing, Answer(200, envelope(
                "ListFilesInGuest", "<returnval><files><path>a</path><type>file</type><size>big</size>"
                "<attributes/></files><remaining>0</remaining></returnval>"), xml), "ls"),
            ("listing: a fault of an unknown class", "/sdk", listing,
             Answer(500, fault("FluxCapacitor", "the flux capacitor"), xml), "ls"),
            ("listing: billion laughs", "/sdk", listing, Answer(200, billion_laughs("ListFilesInGuest"), xml), "ls"),
            ("initiate: HTML", "/sdk", initiate, Answer(200, b"<html>x</html>", "text/html"), "cat"),
            ("initiate: wrong types", "/sdk", initiate, Answer(200, envelope(
                "InitiateFileTransferFromGuest", "<returnval><size>x</size><url>u</url></returnval>"), xml), "cat"),
            get_lie,
        ]
    listing = "ListFilesInGuest" if api == "vi-json" else "files?action=list"
    initiate = "InitiateFileTransferFromGuest" if api == "vi-json" else "filesystem?action=create"
    wrong_listing = (b'{"_typeName": "GuestListFileInfo", "files": "many", "remaining": "x"}' if api == "vi-json"
                     else b'{"files": "many", "status": 7}')
    wrong_entry = (b'{"_typeName": "GuestListFileInfo", "files": [{"path": 7, "type": "file", "size": "big"}], '
                   b'"remaining": 0}' if api == "vi-json" else b'{"files": [{"filename": 7, "type": "FILE", '
                                                               b'"size": "big"}], "status": "END_OF_DATA"}')
    wrong_initiate = (b'{"_typeName": "FileTransferInformation", "size": "x", "url": 42}' if api == "vi-json"
                      else b'{"url": 42}')
    return [
        ("listing: HTML", listing, None, Answer(200, b"<html><body>Service Unavailable</body></html>", "text/html"),
         "ls"),
        ("listing: 500 HTML", listing, None, Answer(500, b"<html>Internal error</html>", "text/html"), "ls"),
        ("listing: truncated JSON", listing, None, Answer(200, b'{"_typeName": "GuestListFileInfo", "files": [{"pa'),
         "ls"),
        ("listing: wrong types", listing, None, Answer(200, wrong_listing), "ls"),
        ("listing: wrong entry types", listing, None, Answer(200, wrong_entry), "ls"),
        ("initiate: HTML", initiate, None, Answer(200, b"<html>x</html>", "text/html"), "cat"),
        ("initiate: wrong types", initiate, None, Answer(200, wrong_initiate), "cat"),
        get_lie,
    ]


@pytest.mark.parametrize("api", APIS)
def test_a_vcenter_answering_nonsense_while_mounted_gives_eio_and_the_mount_stays(tmp_path, api):
    """A proxy between the mount and the simulator lies about one kind of call at a time: the program gets EIO
    at once, the mount stays up, the same operation works once the lies stop, and memory stays flat."""
    root = tmp_path / "vms"
    (root / "vm1").mkdir(parents=True)
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim, lying_proxy(sim.url) as proxy:
        body = config_text(tmp_path, proxy.url, api, vcenter_extra='password = "vmware"\ntimeout = 5\n')
        lies = _lies(api)
        for i, (_, _, _, _, op) in enumerate(lies):  # all made before the mount lists vm1
            subject = root / "vm1" / f"s{i}"
            if op == "ls":
                subject.mkdir()
                (subject / "inside").write_text("x")
            else:
                subject.write_bytes(os.urandom(64 * 1024))
        with mounted_with(tmp_path, sim, body, api) as gm:
            assert len(os.listdir(gm.vm)) == len(lies)
            before = memory_kib(gm.proc.pid)
            results = []
            for i, (what, part, body_part, answer, op) in enumerate(lies):
                subject = root / "vm1" / f"s{i}"
                argv = ["ls" if op == "ls" else "cat", gm.vm / subject.name]
                proxy.lie(part, answer, body_part=body_part)
                started = time.monotonic()
                lied = subprocess.run(argv, capture_output=True, timeout=60)
                took = time.monotonic() - started
                told = proxy.told()
                proxy.truth()
                assert told >= 1, f"{what}: the lie was never told"
                assert lied.returncode != 0 and b"Input/output error" in lied.stderr, (what, lied.stderr)
                assert took < 10, f"{what}: {took:.1f} s"
                truth = subprocess.run(argv, capture_output=True, timeout=60)
                assert truth.returncode == 0, (what, truth.stderr)
                assert truth.stdout == (b"inside\n" if op == "ls" else subject.read_bytes()), what
                results.append(f"{what}: EIO in {took * 1000:.0f} ms")
            after = memory_kib(gm.proc.pid)
            assert gm.proc.poll() is None and is_mounted(gm.mp)
            log = gm.log()
    grew_mib = (after["VmRSS"] - before["VmRSS"]) / 1024
    print(f"FIGURES nonsense while mounted {api}: " + "; ".join(results) +
          f"; mount VmRSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MiB, "
          f"VmHWM {after['VmHWM'] / 1024:.0f} MiB")
    assert grew_mib < 20, f"the mount's RSS grew by {grew_mib:.0f} MiB"
    assert "Traceback" not in log, log[-3000:]
    assert re.search(r"WARNING .*download of vm1/s\d+ failed: .*4294967296", log), log[-3000:]


@pytest.mark.parametrize("api", APIS)
def test_a_4_gib_content_length_lie_through_the_mount(tmp_path, api):
    """Every transfer GET announces 4 GiB and sends 1000 bytes: cat gets EIO at once, the spool does not grow,
    the mount's memory stays flat, stat keeps the real size, and the file reads fine once the lie stops."""
    root = tmp_path / "vms"
    (root / "vm1").mkdir(parents=True)
    data = os.urandom(1 << 20)
    (root / "vm1/file").write_bytes(data)
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim, lying_proxy(sim.url) as proxy:
        body = config_text(tmp_path, proxy.url, api, vcenter_extra='password = "vmware"\ntimeout = 5\n')
        with mounted_with(tmp_path, sim, body, api) as gm:
            before = memory_kib(gm.proc.pid)
            proxy.lie("/guestFile", Answer(200, b"x" * 1000, "application/octet-stream", content_length=4 << 30))
            started = time.monotonic()
            for _ in range(10):
                lied = subprocess.run(["cat", gm.vm / "file"], capture_output=True, timeout=60)
                assert lied.returncode == 1 and b"Input/output error" in lied.stderr, lied.stderr
                assert lied.stdout == b""  # no short file that looks complete
            took = (time.monotonic() - started) / 10
            told = proxy.told()
            spool = sum(p.stat().st_size for p in (tmp_path / "spool").iterdir())
            after = memory_kib(gm.proc.pid)
            size_after_lies = os.stat(gm.vm / "file").st_size
            proxy.truth()
            assert run("cat", gm.vm / "file").stdout == data
            assert gm.proc.poll() is None
    # the announced 4 GiB of a failed GET must not become the file's size (REST learns sizes from the GET)
    assert size_after_lies == len(data)
    print(f"FIGURES 4 GiB lie {api}: EIO in {took * 1000:.0f} ms each ({told} lying GETs for 10 reads); "
          f"spool {spool} bytes; mount VmRSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MiB, "
          f"VmHWM {after['VmHWM'] / 1024:.0f} MiB")
    assert told >= 10 and took < 5
    assert spool < 1 << 20
    assert (after["VmRSS"] - before["VmRSS"]) / 1024 < 20
