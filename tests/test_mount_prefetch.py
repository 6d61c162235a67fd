"""Reads at vCenter latency, on real mounts of the simulator: the content cache (bounded, evicts, sees guest-side
changes after the TTL, serves what the mount wrote), prefetch for directory scans (within its limits, never ahead
of an `ls`, gone once its reader is), REST listings completed for `ls -l`, and a serial guest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.mounting import wait_until
from tests.helpers.mountfs import mounted_guestfs
from tests.test_mount import calls, run
from tests.test_status import status_json

APIS = ["vi-json", "rest"]
OLD = time.time() - 3600  # guest files older than a second or two: the content cache keeps copies of them


def make_files(directory: Path, names, size: int = 4096) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in names:
        made[name] = os.urandom(size)
        (directory / name).write_bytes(made[name])
        os.utime(directory / name, (OLD, OLD))
    return made


def read_fresh(path: Path) -> bytes:
    """Read through the mount with the kernel's cached pages dropped first, so the read reaches the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return path.read_bytes()


def gets(m) -> int:
    return m.stats().get("guestFile.GET", 0)


def got_paths(m) -> list[str]:
    """Guest paths the simulator served by GET, from its log."""
    return re.findall(r"op=guestFile\.GET vm=\S+ path='([^']*)' -> 200", (m.log_path.parent / "sim.log").read_text())


@pytest.mark.parametrize("api", APIS)
def test_content_cache_rereads_evicts_sees_guest_changes_and_keeps_our_writes(tmp_path, api):
    files = {}
    with mounted_guestfs(tmp_path, api, attr_ttl=1.0, dir_ttl=1.0, cache_config="content_max_mib = 1\n",
                         setup=lambda vm: files.update(make_files(vm / "d", "abc", 400 << 10))) as m:
        d = m.vm / "d"
        assert read_fresh(d / "a") == files["a"] and gets(m) == 1
        m.reset_stats()
        assert read_fresh(d / "a") == files["a"]
        assert gets(m) == 0  # a second read of an unchanged file: no transfer
        assert read_fresh(d / "b") == files["b"] and read_fresh(d / "c") == files["c"]
        m.reset_stats()
        assert read_fresh(d / "c") == files["c"] and gets(m) == 0
        assert read_fresh(d / "a") == files["a"] and gets(m) == 1  # 3 x 400 KiB > 1 MiB: the oldest went

        # changed on the guest (same size): seen once the record is older than attr_ttl
        new = os.urandom(400 << 10)
        (m.guest / "d" / "b").write_bytes(new)
        os.utime(m.guest / "d" / "b", (OLD + 60, OLD + 60))
        time.sleep(1.5)
        assert read_fresh(d / "b") == new

        # what the mount wrote is what a read gives, without a transfer
        ours = os.urandom(100_000)
        (tmp_path / "src").write_bytes(ours)
        run("cp", tmp_path / "src", d / "w")
        m.reset_stats()
        assert read_fresh(d / "w") == ours and gets(m) == 0
        time.sleep(1.5)  # and once its record expired: a stat, still no transfer
        assert read_fresh(d / "w") == ours and gets(m) == 0
        assert "Traceback" not in m.log()


@pytest.mark.parametrize("api", APIS)
def test_prefetch_follows_a_scan_within_its_limits(tmp_path, api):
    small = [f"s{i:02d}" for i in range(16)]
    files = {}

    def setup(vm):
        files.update(make_files(vm / "d", small))
        files.update(make_files(vm / "d", ["big1", "big2"], 100 << 10))  # above prefetch_max_kib

    with mounted_guestfs(tmp_path, api, setup=setup,
                         cache_config="prefetch_files = 3\nprefetch_max_kib = 64\n") as m:
        d = m.vm / "d"
        order = [n for n in os.listdir(d)]  # the listing's order, which a scan follows
        first = [n for n in order if n.startswith("s")][:4]
        m.reset_stats()
        out = subprocess.run(["cat", *[d / n for n in first]], capture_output=True, timeout=60).stdout
        assert out == b"".join(files[n] for n in first)
        time.sleep(1.0)  # prefetches run after the reader
        fetched = got_paths(m)
        assert not any("big" in p for p in fetched)
        assert len(fetched) <= 4 + 3, fetched  # what cat read, and 3 files ahead at most
        ahead = [n for n in order if n.startswith("s") and n not in first][:3]
        assert sorted(p.rsplit("/", 1)[1] for p in fetched) == sorted(first + ahead), (fetched, order)
        # the rest of the scan: every file right, each fetched once
        for name in order:
            assert read_fresh(d / name) == files[name], name
        fetched = got_paths(m)
        assert sorted(p.rsplit("/", 1)[1] for p in fetched) == sorted(order), fetched
        assert "Traceback" not in m.log()


def test_find_exec_cat_is_one_reader(tmp_path, state_home):
    with mounted_guestfs(tmp_path, setup=lambda vm: make_files(vm / "d", [f"s{i:02d}" for i in range(12)])) as m:
        os.listdir(m.vm / "d")
        m.reset_stats()
        out = subprocess.run(["find", str(m.vm / "d"), "-type", "f", "-exec", "cat", "{}", ";"], capture_output=True,
                             timeout=60).stdout
        assert len(out) == 12 * 4096
        assert gets(m) == 12  # each file once, most of them fetched ahead
        figures = status_json(m.mp)["figures"]
        assert figures["prefetched_files"] >= 8 and figures["content_cache_hits"] >= 8, figures


def test_prefetch_never_delays_an_ls(tmp_path):
    def setup(vm):
        make_files(vm / "d", [f"s{i:02d}" for i in range(40)])
        (vm / "e").mkdir()

    with mounted_guestfs(tmp_path, setup=setup) as m:
        d = m.vm / "d"
        os.listdir(m.vm)  # e's record: its ls below is one listing call
        names = os.listdir(d)
        m.sim.latency("vm1", 1200)  # every guest operation of vm1 takes 1.2 s more
        reader = subprocess.Popen(["cat", *[d / n for n in names]], stdout=subprocess.DEVNULL)
        try:
            assert wait_until(lambda: m.stats().get("InitiateFileTransferFromGuest", 0) >= 4, 10)
            start = time.monotonic()
            os.listdir(m.vm / "e")  # one listing: it takes the slot prefetches leave free
            seconds = time.monotonic() - start
            assert seconds < 2.0, seconds  # one call; behind a prefetch it would be two (2.4 s)
        finally:
            reader.kill()
            reader.wait(10)


def test_an_interrupted_cp_leaves_no_prefetch_running(tmp_path, state_home):
    with mounted_guestfs(tmp_path, setup=lambda vm: make_files(vm / "d", [f"s{i:02d}" for i in range(40)])) as m:
        m.sim.throttle("vm1", 8192)  # half a second per file
        cp = subprocess.Popen(["cp", "-r", str(m.vm / "d"), str(tmp_path / "out")])
        try:
            assert wait_until(lambda: status_json(m.mp)["figures"].get("prefetch_running", 0) > 0, 15)
        finally:
            cp.send_signal(signal.SIGKILL)
            cp.wait(10)

        def idle() -> bool:
            status = status_json(m.mp)
            return status["figures"]["prefetch_running"] == 0 and not status["transfers"]

        assert wait_until(idle, 10, interval=0.3)
        m.reset_stats()
        time.sleep(1.0)
        assert calls(m.stats()) == 0  # nothing keeps fetching
        m.sim.throttle("vm1", 0)


@pytest.mark.parametrize("guest", ["parallel", "serial"])
def test_rest_ls_l_fetches_attributes_side_by_side_and_once(tmp_path, guest):
    n = 16
    sim_args = ("--serial-guest-ops",) if guest == "serial" else ()
    with mounted_guestfs(tmp_path, "rest", latency_ms=100, sim_args=sim_args,
                         setup=lambda vm: make_files(vm / "d", [f"f{i:02d}" for i in range(n)], 10)) as m:
        os.listdir(m.vm)
        run("stat", m.vm / "d")
        m.reset_stats()
        run("ls", m.vm / "d")
        assert calls(m.stats()) == 1  # a plain ls pays for no attribute
        m.reset_stats()
        start = time.monotonic()
        out = run("ls", "-l", m.vm / "d").stdout
        seconds = time.monotonic() - start
        assert out.count(" 10 ") == n  # sizes, and times and modes from the stats
        assert m.stats().get("ListFilesInGuest", 0) == n  # each entry's record once
        if guest == "serial":
            assert seconds >= n * 0.1  # one guest operation at a time: the simulator serialises them
        else:
            assert seconds < n * 0.1 * 0.75  # side by side (4 at once by default)
        m.reset_stats()
        run("ls", "-l", m.vm / "d")
        assert calls(m.stats()) == 0
