"""Start and stop of the mount: SIGTERM uploads dirty files before unmounting (or, past stop_timeout, keeps them
in the recovery directory); a mount leaves nothing behind; after a SIGKILL, `fusermount3 -u` cleans up and the next
start keeps the spool files that held unsaved bytes."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.mounting import is_mounted, wait_until
from tests.helpers.mountfs import VM, mounted_guestfs


def test_sigterm_uploads_dirty_files_then_unmounts(tmp_path):
    with mounted_guestfs(tmp_path) as m:
        fd = os.open(m.vm / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"written before SIGTERM")
            assert not (m.guest / "f").exists()
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(timeout=30)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        assert (m.guest / "f").read_bytes() == b"written before SIGTERM"
        assert not is_mounted(m.mp)
        assert m.proc.returncode == 0, m.log()[-2000:]
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_slow_guest_does_not_block_other_vms(tmp_path):
    import subprocess
    import time

    def setup(vm1):
        (vm1.parent / "slowvm").mkdir()
        (vm1 / "f").write_text("fast")

    with mounted_guestfs(tmp_path, setup=setup) as m:
        m.sim.latency("slowvm", 4000)
        slow = subprocess.Popen(["ls", str(m.mp / "slowvm")], stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            assert os.listdir(m.vm) == ["f"] and (m.vm / "f").read_text() == "fast"
            assert time.monotonic() - t0 < 2
            assert slow.poll() is None  # still waiting for its guest
        finally:
            slow.wait(timeout=30)
        assert slow.returncode == 0


def test_read_only_mount(tmp_path):
    import errno

    import pytest

    def setup(vm1):
        (vm1 / "f").write_text("content")

    with mounted_guestfs(tmp_path, setup=setup, extra_args=("--read-only",)) as m:
        assert (m.vm / "f").read_text() == "content"
        for fn, args in [(open, (m.vm / "f", "w")), (os.mkdir, (m.vm / "d",)), (os.unlink, (m.vm / "f",)),
                         (os.chmod, (m.vm / "f", 0o600))]:
            with pytest.raises(OSError) as e:
                fn(*args)
            assert e.value.errno == errno.EROFS, fn
        assert (m.guest / "f").read_text() == "content"


# --- a stop while uploads run, and a crash ---------------------------------------------------------------------

THROTTLE = 64 * 1024  # bytes/s per transfer: a 48 KiB file goes up in ~1 s, a 1 MiB one in ~16 s
STOP_TIMEOUT = 4


def _uploads_in_flight(guest: Path) -> int:
    """PUT bodies the simulator is receiving: it writes each to a `.guestfs-sim-*` temp file (docs/simulator.md)."""
    return sum(1 for p in guest.iterdir() if p.name.startswith(".guestfs-sim-") and p.stat().st_size > 0)


def _kept_copy(recovered: Path, rel: str) -> Path | None:
    copies = sorted(recovered.glob(f"{rel}.*")) if recovered.exists() else []
    assert len(copies) <= 1, copies
    return copies[0] if copies else None


def test_sigterm_while_uploads_run_uploads_or_keeps_each_file_then_unmounts(tmp_path):
    """Four files closing (their uploads in flight, throttled) and two written but still open get SIGTERM: each
    is then complete on the guest or in the recovery directory with its log line, never partial and never
    lost; the mount is gone within stop_timeout and a few seconds, exit code 0."""
    data = {"small-closing": os.urandom(48 << 10), "big-closing-1": os.urandom(1 << 20),
            "big-closing-2": os.urandom(1 << 20), "small-closing-2": os.urandom(40 << 10),
            "small-open": os.urandom(32 << 10), "big-open": os.urandom(1 << 20)}
    with mounted_guestfs(tmp_path, mount_config=f"stop_timeout = {STOP_TIMEOUT}\n") as m:
        m.sim.throttle(VM, THROTTLE)
        closes: dict[str, str] = {}

        def write_and_close(name: str) -> None:
            try:
                with open(m.vm / name, "wb") as f:
                    f.write(data[name])
                closes[name] = "ok"
            except OSError as e:  # the mount went away under a close still uploading
                closes[name] = errno.errorcode.get(e.errno, str(e.errno))

        writers = [threading.Thread(target=write_and_close, args=(n,), daemon=True) for n in data if "closing" in n]
        fds = []
        try:
            for name in ("small-open", "big-open"):
                fds.append(os.open(m.vm / name, os.O_WRONLY | os.O_CREAT, 0o600))
                os.write(fds[-1], data[name])
            for t in writers:
                t.start()
            assert wait_until(lambda: _uploads_in_flight(m.guest) == 4, 20), list(m.guest.iterdir())
            t0 = time.monotonic()
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(timeout=STOP_TIMEOUT + 30)
            took = time.monotonic() - t0
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for t in writers:
            t.join(timeout=30)
        assert m.proc.returncode == 0, m.log()[-3000:]
        assert not is_mounted(m.mp)
        assert took < STOP_TIMEOUT + 6, took
        # bytes the mount had already pushed into its sockets still reach the simulator: let them drain, so what
        # the guest ends up with is final (a cut upload leaves nothing; one whose bytes all arrived completes)
        m.sim.throttle(VM, 0)
        assert wait_until(lambda: _uploads_in_flight(m.guest) == 0 and not any(
            p.name.startswith(".guestfs-sim-") for p in m.guest.iterdir()), 20), list(m.guest.iterdir())
        log = m.log()
        outcome = {}
        for name, content in data.items():
            on_guest = m.guest / name
            kept = _kept_copy(m.recovered, f"{VM}/{name}")
            if on_guest.exists():
                assert on_guest.read_bytes() == content, f"{name}: partial or wrong on the guest"
            if kept is not None:
                assert kept.read_bytes() == content, f"{name}: the kept copy differs"
                assert f"upload of {VM}/{name} failed (the mount stopped" in log and str(kept) in log, name
            assert on_guest.exists() or kept is not None, f"{name}: lost"
            outcome[name] = "guest" if kept is None else "recovered" + (" (and guest)" if on_guest.exists() else "")
        # the small files finish well within stop_timeout, the 1 MiB ones (16 s each) cannot
        assert {n: o.split()[0] for n, o in outcome.items()} == {
            n: "guest" if "small" in n else "recovered" for n in data}, outcome
        print(f"\nSIGTERM with 4 uploads in flight and 2 dirty open files: exit {m.proc.returncode} after "
              f"{took:.1f} s (stop_timeout {STOP_TIMEOUT} s); {outcome}; closes: {closes}")
    assert list(m.spool.iterdir()) == []


def test_sigterm_waits_for_uploads_that_finish_within_stop_timeout(tmp_path):
    """The same stop with uploads that take ~2 s: every file reaches the guest, the closes in flight succeed,
    nothing goes to the recovery directory."""
    data = {f"f{i}": os.urandom(512 << 10) for i in range(4)}
    with mounted_guestfs(tmp_path) as m:
        m.sim.throttle(VM, 256 << 10)
        closes: dict[str, object] = {}

        def write_and_close(name: str) -> None:
            try:
                with open(m.vm / name, "wb") as f:
                    f.write(data[name])
                closes[name] = "ok"
            except OSError as e:
                closes[name] = e

        writers = [threading.Thread(target=write_and_close, args=(n,), daemon=True) for n in data]
        fd = os.open(m.vm / "open", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"o" * (300 << 10))
            for t in writers:
                t.start()
            assert wait_until(lambda: _uploads_in_flight(m.guest) == 4, 20), list(m.guest.iterdir())
            t0 = time.monotonic()
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(timeout=60)
            took = time.monotonic() - t0
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        for t in writers:
            t.join(timeout=30)
        assert m.proc.returncode == 0 and not is_mounted(m.mp), m.log()[-3000:]
        assert closes == {n: "ok" for n in data}, closes
        for name, content in data.items():
            assert (m.guest / name).read_bytes() == content, name
        assert (m.guest / "open").read_bytes() == b"o" * (300 << 10)
        assert not m.recovered.exists()
        print(f"\nSIGTERM with 4 uploads in flight (~2 s each) and 1 dirty open file: exit 0 after {took:.1f} s, "
              f"all 5 files complete on the guest, closes {closes}")


def test_sigkill_leaves_a_mount_fusermount_cleans_and_the_next_start_keeps_unsaved_spools(tmp_path):
    """SIGKILL with dirty files: `fusermount3 -u` cleans the dead mount; the next start with the same spool
    directory moves every spool holding unsaved bytes to the recovery directory under its guest path (a renamed
    file under its new name) with one log line each, deletes the download copies, and serves the VM again."""
    old, new_bytes, tail = b"guest copy\n" * 100, os.urandom(300 << 10), b"appended before the crash\n"

    def setup(vm1):
        (vm1 / "edited").write_bytes(old)
        (vm1 / "big").write_bytes(os.urandom(3 << 20))

    with mounted_guestfs(tmp_path, setup=setup) as m:
        fds = []
        try:
            fds.append(os.open(m.vm / "new", os.O_WRONLY | os.O_CREAT, 0o600))
            os.write(fds[-1], new_bytes)
            fds.append(os.open(m.vm / "edited", os.O_WRONLY | os.O_APPEND))
            os.write(fds[-1], tail)
            os.mkdir(m.vm / "d")
            fds.append(os.open(m.vm / "d" / "x", os.O_WRONLY | os.O_CREAT, 0o600))
            os.write(fds[-1], b"x" * 1000)
            os.rename(m.vm / "d", m.vm / "e")
            fds.append(os.open(m.vm / "synced", os.O_WRONLY | os.O_CREAT, 0o600))
            os.write(fds[-1], b"on the guest already")
            os.fsync(fds[-1])
            fds.append(os.open(m.vm / "big", os.O_RDONLY))
            assert len(os.read(fds[-1], 4096)) == 4096  # a download copy in the spool
            spools = sorted(p.name for p in m.spool.iterdir())
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=10)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        assert is_mounted(m.mp)  # a dead FUSE mount stays until someone unmounts it
        with pytest.raises(OSError) as e:
            os.listdir(m.mp)
        assert e.value.errno == errno.ENOTCONN
        t0 = time.monotonic()
        um = subprocess.run(["fusermount3", "-u", str(m.mp)], capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
        assert um.returncode == 0, um.stderr
        assert not is_mounted(m.mp)
    assert len([s for s in spools if s.endswith(".spool")]) == 5, spools
    assert len([s for s in spools if s.endswith(".spool.path")]) == 3, spools  # new, edited, e/x: not synced, big
    assert (tmp_path / "vms" / VM / "edited").read_bytes() == old  # never uploaded

    with mounted_guestfs(tmp_path) as m:
        log = m.log()
        kept = {}
        for rel, content in ((f"{VM}/new", new_bytes), (f"{VM}/edited", old + tail), (f"{VM}/e/x", b"x" * 1000)):
            copy = _kept_copy(m.recovered, rel)
            assert copy is not None, (rel, log[-3000:])
            assert copy.read_bytes() == content, rel
            assert copy.stat().st_mode & 0o777 == 0o600
            line = next(ln for ln in log.splitlines() if "leftover spool file" in ln and f"changes to {rel} " in ln)
            assert str(copy) in line, line
            kept[rel] = copy.name
        assert "removed 2 leftover spool file(s)" in log  # the download copy of big, the fsynced synced
        assert list(m.spool.iterdir()) == []
        assert (m.vm / "edited").read_bytes() == old  # the mount serves again
        assert (m.vm / "synced").read_bytes() == b"on the guest already"
        print(f"\nSIGKILL with 3 dirty files and 2 clean spools: fusermount3 -u took {took * 1000:.0f} ms; next start "
              f"kept {kept}, removed the 2 clean copies")
