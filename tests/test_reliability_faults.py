"""Faults survived by a real mount (issue #7): each test mounts the real command line on the simulator (and, where
the network must fail, a TcpProxy in front of it), injects one fault while real programs (cat, cp, python os)
use the mount, and checks the errno the program gets, how long it took, that nothing written was lost, that the
mount is still up, and that the next operation works once the fault is gone.

Covered on a mount elsewhere, not repeated here: tests/test_mount.py::test_upload_failure_is_returned_and_recovered
(NoDiskSpace at initiate: ENOSPC from close, the recovered copy, one log line),
::test_failed_download_gives_errno_not_a_short_file (a download cut on both of its tries: EIO, not a short file),
::test_powered_off_vm_gives_ehostdown (EHOSTDOWN for a VM that is off, works again when on).
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.faultmount import VM, FaultMount, fault_mount, retry_until, timed

# the read/write programs' view of time: how long an errno may take to come back after the fault
PROMPT = 3.0  # seconds: "at once" on a loaded 2-core machine


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def cp(src: Path, dst: Path) -> None:
    """cp(1); its failure as an OSError (for retry_until)."""
    p = subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise OSError(errno.EIO, p.stderr.strip())


def assert_serving(m: FaultMount) -> None:
    """The mount process is alive and answers at once."""
    assert m.alive(), m.log()[-3000:]
    result, took = timed(os.listdir, m.mp)
    assert result == [VM] and took < PROMPT, (result, took)


def recovery_lines(m: FaultMount, copy: Path) -> list[str]:
    return [line for line in m.log().splitlines() if str(copy) in line]


def assert_recovered(m: FaultMount, guest_name: str, data: bytes, before: set[Path] = frozenset()) -> Path:
    """Exactly one new copy of `data` for `guest_name` in the recovery dir, named by exactly one log line that
    also names the guest path."""
    new = [p for p in m.recovered_files() if p not in before]
    assert len(new) == 1, new
    copy = new[0]
    assert copy.name.startswith(guest_name + "."), copy
    assert copy.relative_to(m.recovered).parts[0] == VM
    assert copy.read_bytes() == data
    lines = recovery_lines(m, copy)
    assert len(lines) == 1 and f"{VM}/{guest_name}" in lines[0], lines
    return copy


READER = r"""
import hashlib, os, sys, time
path, mark = sys.argv[1], int(sys.argv[2])
h, n, said = hashlib.sha256(), 0, False
try:
    fd = os.open(path, os.O_RDONLY)
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
        if n >= mark and not said:
            print("PROGRESS", n, flush=True)
            said = True
except OSError as e:
    print("ERRNO", e.errno, n, flush=True)
    sys.exit(1)
print("OK", n, h.hexdigest(), flush=True)
"""


class Reader:
    """A python process reading a file of the mount in 64 KiB reads; says PROGRESS after `mark` bytes, then
    OK <bytes> <sha256> or ERRNO <errno> <bytes>."""

    def __init__(self, path: Path, mark: int = 1):
        self.proc = subprocess.Popen([sys.executable, "-c", READER, str(path), str(mark)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.split())
        self.lines.put(None)

    def next(self, timeout: float) -> list[str]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"the reader said nothing within {timeout}s: it hangs") from None
        assert line is not None, "the reader ended without a word"
        return line

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ------------------------------------------------------------------------------------------ power
# streamed: the file larger than what the mount keeps whole on disk (content_file_max_mib), read from memory
STREAMED = {"content_file_max_mib": 1}


@pytest.mark.parametrize("streamed", [False, True], ids=["filed", "streamed"])
def test_power_off_mid_read_gives_ehostdown_promptly_and_reads_work_after_power_on(tmp_path, streamed):
    with fault_mount(tmp_path, cache=STREAMED if streamed else None) as m:
        data = os.urandom(4 << 20)
        (m.guest / "big").write_bytes(data)
        m.sim.throttle(VM, 512 << 10)  # 8 s for the whole file
        out = tmp_path / "out"
        with open(out, "wb") as sink:
            cat = subprocess.Popen(["cat", str(m.vm / "big")], stdout=sink, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: out.stat().st_size >= 256 << 10, 20), "the read never started"
            t0 = time.monotonic()
            m.power("poweredOff")
            rc = cat.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if cat.poll() is None:
                cat.kill()
        err = cat.stderr.read()
        print(f"power-off mid-read: cat exit {rc}, {err.strip()!r} after {took:.2f}s")
        # the cut transfer is renewed once; the new initiate learns why: InvalidPowerState, EHOSTDOWN (as
        # troubleshooting.md gives for a VM that is off), not a bare EIO
        assert rc == 1 and "Host is down" in err, err
        assert took < PROMPT
        assert 0 < out.stat().st_size < len(data)  # what it had; never a short file passed off as whole
        assert_serving(m)
        m.sim.throttle(VM, 0)
        m.power("poweredOn")
        # the VM list of the mount notices within its recheck interval (2 s)
        got, took = timed(retry_until, lambda: (m.vm / "big").read_bytes(), 10)
        print(f"power on: read works after {took:.2f}s")
        assert got == data


def test_power_off_mid_upload_returns_errno_and_keeps_the_bytes(tmp_path):
    with fault_mount(tmp_path) as m:
        data = os.urandom(3 << 20)
        m.sim.throttle(VM, 512 << 10)  # 6 s on the wire
        fd = os.open(m.vm / "upload.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        m.reset_stats()

        def power_off_once_the_put_runs():
            if wait_for(lambda: m.stats().get("guestFile.PUT", 0) >= 1, 20):
                time.sleep(0.5)
                m.power("poweredOff")

        killer = threading.Thread(target=power_off_once_the_put_runs)
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            os.close(fd)
        took = time.monotonic() - t0
        killer.join(30)
        print(f"power-off mid-upload: close -> {errno.errorcode[e.value.errno]} after {took:.2f}s")
        assert e.value.errno == errno.EHOSTDOWN
        assert took < 10
        assert not (m.guest / "upload.bin").exists()
        assert_recovered(m, "upload.bin", data)
        assert_serving(m)
        m.sim.throttle(VM, 0)
        m.power("poweredOn")
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        _, took = timed(retry_until, lambda: cp(src, m.vm / "upload.bin"), 10)
        print(f"power on: cp works after {took:.2f}s")
        assert (m.guest / "upload.bin").read_bytes() == data


# ------------------------------------------------------------------------------------------ transfer URLs
@pytest.mark.parametrize("api,streamed", [("vi-json", False), ("soap", False), ("rest", False), ("vi-json", True),
                                         ("rest", True)])
def test_download_cut_midway_is_reinitiated_and_the_reader_gets_the_whole_file(tmp_path, api, streamed):
    with fault_mount(tmp_path, api, cache=STREAMED if streamed else None) as m:
        data = os.urandom(3 << 20)
        (m.guest / "f").write_bytes(data)
        m.reset_stats()
        m.fault("guestFile.GET", "TransferAborted", 1)  # 64 KiB, then the connection closes
        reader = Reader(m.vm / "f")
        try:
            assert reader.next(20)[0] == "PROGRESS"
            line = reader.next(20)
        finally:
            reader.close()
        assert line == ["OK", str(len(data)), sha256(data)], line
        stats = m.stats()
        initiates = stats.get("InitiateFileTransferFromGuest", 0)
        print(f"GET cut at 64 KiB ({api}): reader OK, {initiates} initiates, {stats.get('guestFile.GET')} GETs")
        assert (initiates, stats.get("guestFile.GET")) == (2, 2)


def test_expired_download_url_is_reinitiated(tmp_path):
    with fault_mount(tmp_path, proxy=True) as m:
        data = os.urandom(1 << 20)
        (m.guest / "f").write_bytes(data)
        m.reset_stats()
        m.proxy.expire_transfers(1)  # the first GET of the URL answers 404, as a dead or expired URL does
        assert (m.vm / "f").read_bytes() == data
        assert m.proxy.counts["expired"] == 1
        assert m.stats().get("InitiateFileTransferFromGuest") == 2


@pytest.mark.parametrize("how", ["sim-fault", "expired"])
def test_upload_url_that_dies_is_reinitiated(tmp_path, how):
    with fault_mount(tmp_path, proxy=how == "expired") as m:
        data = os.urandom(2 << 20)
        src = tmp_path / "src"
        src.write_bytes(data)
        m.reset_stats()
        if how == "expired":
            m.proxy.expire_transfers(1)
        else:
            m.fault("guestFile.PUT", "TransferAborted", 1)  # reads some of the body, answers 500
        cp(src, m.vm / "f")
        assert (m.guest / "f").read_bytes() == data
        assert m.stats().get("InitiateFileTransferToGuest") == 2
        assert m.recovered_files() == []


def test_upload_url_dying_on_every_try_returns_eio_and_keeps_the_bytes(tmp_path):
    with fault_mount(tmp_path) as m:
        (m.guest / "f").write_bytes(b"old")
        data = os.urandom(1 << 20)
        m.fault("guestFile.PUT", "TransferAborted", 2)
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data)
        result, took = timed(os.close, fd)
        print(f"PUT failing twice: close -> {result!r} after {took:.2f}s")
        assert isinstance(result, OSError) and result.errno == errno.EIO
        assert (m.guest / "f").read_bytes() == b"old"
        assert_recovered(m, "f", data)
        assert_serving(m)
        assert (m.vm / "f").read_bytes() == b"old"


# ------------------------------------------------------------------------------------------ sessions, vCenter restart
@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_session_expiry_is_a_silent_relogin(tmp_path, api):
    with fault_mount(tmp_path, api) as m:
        (m.guest / "d").mkdir()
        (m.guest / "d" / "a").write_bytes(b"A")
        src = tmp_path / "src"
        src.write_bytes(b"new")
        m.reset_stats()
        m.sim.expire_sessions()
        assert os.listdir(m.vm / "d") == ["a"]
        m.sim.expire_sessions()
        assert (m.vm / "d" / "a").read_bytes() == b"A"
        m.sim.expire_sessions()
        cp(src, m.vm / "d" / "b")
        assert (m.guest / "d" / "b").read_bytes() == b"new"
        logins = m.stats().get("Login", 0)
        print(f"session expiry ({api}): 3 expiries, {logins} logins, no error")
        assert logins == 3
        assert " ERROR " not in m.log() and "WARNING" not in m.log(), m.log()[-2000:]


def test_session_gone_beyond_relogin_returns_eacces_and_keeps_the_bytes(tmp_path):
    with fault_mount(tmp_path) as m:
        data = os.urandom(200_000)
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        m.sim.expire_sessions()
        m.fault("Login", "InvalidLogin", 1, vm=None)  # vCenter refuses the new login once
        result, took = timed(os.close, fd)
        print(f"session gone, re-login refused: close -> {result!r} after {took:.2f}s")
        assert isinstance(result, OSError) and result.errno == errno.EACCES
        assert not (m.guest / "f").exists()
        assert_recovered(m, "f", data)
        assert_serving(m)
        (m.vm / "f").write_bytes(data)  # the next login works
        assert (m.guest / "f").read_bytes() == data


def test_simulator_restart_fails_fast_while_down_then_reconnects(tmp_path):
    with fault_mount(tmp_path) as m:
        (m.guest / "a").write_bytes(b"A")
        assert (m.vm / "a").read_bytes() == b"A"
        m.server.stop()
        time.sleep(2.2)  # past every cache TTL: each operation below asks vCenter
        seen = []
        for op, arg in ((os.listdir, m.vm), (os.stat, m.vm / "a"), (os.stat, m.vm / "never-seen")):
            result, took = timed(op, arg)
            seen.append((op.__name__, result.errno if isinstance(result, OSError) else result, round(took, 2)))
        print(f"vCenter down: {seen}")
        for name, err, took in seen:
            assert err in (errno.ENOTCONN, errno.EIO), seen
            assert took < PROMPT, seen
        assert m.alive()
        m.server.start()  # same port, same root: new sessions, new transfer URLs
        got, took = timed(retry_until, lambda: (m.vm / "a").read_bytes(), 10)
        print(f"vCenter back: read works after {took:.2f}s")
        assert got == b"A"
        cp(m.guest / "a", m.vm / "b")
        assert (m.guest / "b").read_bytes() == b"A"
        assert m.stats().get("Login", 0) == 1  # one re-login on the new vCenter


def test_vcenter_down_during_upload_keeps_the_bytes(tmp_path):
    with fault_mount(tmp_path) as m:
        data = os.urandom(500_000)
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        m.server.stop()
        result, took = timed(os.close, fd)
        print(f"vCenter down at close: {result!r} after {took:.2f}s")
        assert isinstance(result, OSError) and result.errno in (errno.ENOTCONN, errno.EIO)
        assert took < PROMPT
        assert_recovered(m, "f", data)
        m.server.start()
        retry_until(lambda: (m.vm / "f").write_bytes(data), 10)
        assert (m.guest / "f").read_bytes() == data


# ------------------------------------------------------------------------------------------ busy guests, Tools, logins
@pytest.mark.parametrize("fault, final_errno", [("TaskInProgress", errno.EBUSY), ("TooManyGuestLogons", errno.EAGAIN),
                                                ("GuestOperationsUnavailable", errno.EHOSTDOWN)])
def test_busy_bursts_are_retried_with_backoff_and_bounded(tmp_path, fault, final_errno):
    with fault_mount(tmp_path) as m:  # retries = 3
        retries = m.config["retries"]
        for name in ("short", "long"):
            (m.guest / name).write_bytes(name.encode())
        m.reset_stats()
        m.fault("ListFilesInGuest", fault, retries)  # a burst the retries outlast
        result, took = timed(os.stat, m.vm / "short")
        calls = m.stats().get("ListFilesInGuest", 0)
        print(f"{fault} x{retries}: stat OK after {took:.2f}s, {calls} calls")
        assert not isinstance(result, OSError) and result.st_size == 5
        assert calls == retries + 1
        m.reset_stats()
        m.fault("ListFilesInGuest", fault, retries + 1)  # longer than the retries
        result, took = timed(os.stat, m.vm / "long")
        calls = m.stats().get("ListFilesInGuest", 0)
        print(f"{fault} x{retries + 1}: {result!r} after {took:.2f}s, {calls} calls")
        assert isinstance(result, OSError) and result.errno == final_errno
        assert calls == retries + 1  # bounded: the rest of the burst is not waited out
        # backoff with full jitter: at least the minimum pauses, at most the caps (0.2 * 2**k)
        assert 0.1 * retries - 0.05 <= took < sum(0.2 * 2 ** k for k in range(retries)) + 2
        assert_serving(m)
        assert (m.vm / "long").read_bytes() == b"long"  # the burst is over: at once


def test_tools_not_running_gives_ehostdown_then_works_when_tools_return(tmp_path):
    with fault_mount(tmp_path) as m:
        (m.guest / "f").write_bytes(b"x")
        assert (m.vm / "f").read_bytes() == b"x"
        time.sleep(1.1)  # past attr_ttl: the next stat asks the guest
        m.reset_stats()
        m.sim.tools(VM, False)
        result, took = timed(os.stat, m.vm / "f")
        print(f"Tools stopped: stat -> {result!r} after {took:.2f}s, stats {m.stats()}")
        assert isinstance(result, OSError) and result.errno == errno.EHOSTDOWN
        assert took < 5
        result, took = timed(os.listdir, m.vm)  # the VM list now knows: no guest call, at once
        assert isinstance(result, OSError) and result.errno == errno.EHOSTDOWN and took < 1, (result, took)
        assert VM in os.listdir(m.mp)  # the VM still lists
        assert_serving(m)
        m.sim.tools(VM, True)
        got, took = timed(retry_until, lambda: (m.vm / "f").read_bytes(), 10)
        print(f"Tools back: read works after {took:.2f}s")
        assert got == b"x"


@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_bad_guest_login_is_eacces_with_one_log_line(tmp_path, api):
    with fault_mount(tmp_path, api, guest_password="wrong") as m:
        (m.guest / "d").mkdir()
        errnos = []
        for i in range(20):
            for fn, arg in ((os.stat, m.vm / f"f{i}"), (os.listdir, m.vm / "d")):
                errnos.append(errno_of(fn, arg))
            time.sleep(0.06)
        assert set(errnos) == {errno.EACCES}, errnos
        lines = [line for line in m.log().splitlines() if " WARNING " in line or " ERROR " in line]
        print(f"bad guest login ({api}): 40 calls -> EACCES each, {len(lines)} log line(s): {lines}")
        assert len(lines) == 1, lines
        assert "refused the login" in lines[0] and VM in lines[0] and "'root'" in lines[0] and "wrong" not in lines[0]
        assert_serving(m)


# ------------------------------------------------------------------------------------------ network: unreachable, hung
@pytest.mark.parametrize("timeout", [1.0, 3.0])
def test_vcenter_blackhole_gives_etimedout_within_the_configured_timeout(tmp_path, timeout):
    with fault_mount(tmp_path, proxy=True, vcenter={"timeout": timeout}) as m:
        (m.guest / "f").write_bytes(b"x")
        assert os.stat(m.vm / "f").st_size == 1
        time.sleep(2.2)  # past every cache TTL
        m.proxy.api = "blackhole"  # vCenter accepts connections and answers nothing
        # four programs at once, each stat'ing a name of its own
        results: dict[int, tuple] = {}
        stallers = [threading.Thread(target=lambda i=i: results.update({i: timed(os.stat, m.vm / f"other{i}")}))
                    for i in range(4)]
        for t in stallers:
            t.start()
        time.sleep(0.2)
        # the process is not frozen: a request that needs no vCenter is answered meanwhile
        result, took = timed(os.statvfs, m.mp)
        assert not isinstance(result, OSError) and result.f_namemax == 255 and took < 1, (result, took)
        for t in stallers:
            t.join(8 * timeout + 10)
        assert not any(t.is_alive() for t in stallers), "a stat never returned"
        print(f"vCenter blackholed, timeout {timeout}: 4 concurrent stats -> "
              f"{[(errno.errorcode.get(getattr(r, 'errno', 0)), round(t, 2)) for r, t in results.values()]}")
        for result, took in results.values():
            assert isinstance(result, OSError) and result.errno == errno.ETIMEDOUT
            # one call's timeout, not one per queued caller nor one per kernel retry of the lookup
            assert timeout * 0.9 <= took <= timeout + 1.5
        assert m.alive()
        m.proxy.api = "pass"
        m.proxy.cut()  # the dead connections go; the network is back
        got, took = timed(retry_until, lambda: os.stat(m.vm / "f").st_size, 2 * timeout + 5)
        print(f"network back: stat works after {took:.2f}s")
        assert got == 1


def test_an_open_file_already_read_stays_readable_while_vcenter_is_unreachable(tmp_path):
    with fault_mount(tmp_path, proxy=True, vcenter={"timeout": 1.0}) as m:
        data = os.urandom(300_000)
        (m.guest / "f").write_bytes(data)
        fd = os.open(m.vm / "f", os.O_RDONLY)
        try:
            assert os.pread(fd, len(data) + 1, 0) == data  # the whole file is in the spool now
            time.sleep(2.2)  # past every cache TTL: the kernel asks for the attributes again before reading
            m.proxy.api = "blackhole"
            (got, took) = timed(lambda: (os.fstat(fd).st_size, os.pread(fd, len(data) + 1, 0)))
            print(f"vCenter blackholed: fstat + pread of an open, read file took {took:.2f}s")
            assert not isinstance(got, OSError), got
            assert got == (len(data), data) and took < 1.0 + 1.5
        finally:
            os.close(fd)
            m.proxy.api = "pass"
        assert m.alive()


@pytest.mark.parametrize("mode", ["hang", "stall"])
def test_hung_download_times_out_and_the_mount_keeps_serving(tmp_path, mode):
    with fault_mount(tmp_path, proxy=True) as m:  # timeout = 2 s
        timeout = m.config["timeout"]
        data = os.urandom(1 << 20)
        (m.guest / "f").write_bytes(data)
        m.proxy.transfers = mode  # hang: nothing at all comes back; stall: 64 KiB of the body, then silence
        reader = Reader(m.vm / "f")
        t0 = time.monotonic()
        try:
            # meanwhile the mount serves everything else at once
            result, took = timed(os.listdir, m.vm)
            assert result == ["f"] and took < 1, (result, took)
            line = reader.next(4 * timeout + 10)
            if mode == "stall":
                assert line[0] == "PROGRESS", line
                line = reader.next(4 * timeout + 10)
        finally:
            reader.close()
        took = time.monotonic() - t0
        print(f"hung download ({mode}), timeout {timeout}: reader -> {line} after {took:.2f}s")
        assert line[:2] == ["ERRNO", str(errno.ETIMEDOUT)], line
        assert took <= 2 * timeout + 3  # the first URL's wait, and the renewed one's
        assert_serving(m)
        m.proxy.transfers = "pass"
        assert (m.vm / "f").read_bytes() == data


def test_hung_upload_times_out_and_keeps_the_bytes(tmp_path):
    with fault_mount(tmp_path, proxy=True) as m:
        timeout = m.config["timeout"]
        data = os.urandom(300_000)
        m.proxy.transfers = "hang"
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        result, took = timed(os.close, fd)
        print(f"hung upload, timeout {timeout}: close -> {result!r} after {took:.2f}s")
        assert isinstance(result, OSError) and result.errno == errno.ETIMEDOUT
        assert took <= 2 * timeout + 3
        assert_recovered(m, "f", data)
        assert_serving(m)
        m.proxy.transfers = "pass"
        (m.vm / "f").write_bytes(data)
        assert (m.guest / "f").read_bytes() == data


# ------------------------------------------------------------------------------------------ no data loss
@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_disk_full_fails_fsync_and_close_and_keeps_each_version(tmp_path, api):
    with fault_mount(tmp_path, api) as m:
        first, more = os.urandom(100_000), os.urandom(50_000)
        m.fault("InitiateFileTransferToGuest", "NoDiskSpace", 2)
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, first)
        assert errno_of(os.fsync, fd) == errno.ENOSPC
        copy1 = assert_recovered(m, "f", first)
        os.write(fd, more)  # still open, still dirty: close uploads again
        result, took = timed(os.close, fd)
        print(f"disk full ({api}): fsync -> ENOSPC, close -> {result!r} after {took:.2f}s")
        assert isinstance(result, OSError) and result.errno == errno.ENOSPC
        assert_recovered(m, "f", first + more, before={copy1})
        assert not (m.guest / "f").exists()
        assert_serving(m)
        src = tmp_path / "src"
        src.write_bytes(first + more)
        cp(src, m.vm / "f")  # space again
        assert (m.guest / "f").read_bytes() == first + more
        assert len(m.recovered_files()) == 2


def test_recovery_dir_is_never_cleaned_by_the_program(tmp_path):
    old = tmp_path / "recovered" / VM / "etc" / "old.conf.20240101T000000.000000Z"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"from an earlier day")
    with fault_mount(tmp_path) as m:
        m.fault("InitiateFileTransferToGuest", "NoDiskSpace", 1)
        with pytest.raises(OSError):
            (m.vm / "lost").write_bytes(b"kept")
        kept = m.recovered_files()
        assert old in kept and len(kept) == 2
    with fault_mount(tmp_path) as m:  # a second mount over the same directories, then its unmount
        (m.vm / "fine").write_bytes(b"ok")
    assert sorted(p for p in (tmp_path / "recovered").rglob("*") if p.is_file()) == kept
    assert old.read_bytes() == b"from an earlier day"
    assert [p.read_bytes() for p in kept if p != old] == [b"kept"]
