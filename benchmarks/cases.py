"""One function per measurement. Each takes the run's `Ctx` and returns its figures by name; throughputs are
MiB/s, times seconds (`_s`) or milliseconds (`_ms`), ratios mount / raw (raw = the better of httpx and curl)."""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import raw
from benchmarks.data import GiB, Dataset, MiB, Sizes
from benchmarks.rig import REPO, VM, GuestMount, Simulator


@dataclass
class Ctx:
    sim: Simulator
    mount: GuestMount
    guest: raw.RawGuest
    data: Dataset
    sizes: Sizes
    workdir: Path
    run_dir: str  # this run's guest directory, e.g. "run-vi-json-0ms"
    timeout: float  # for any one command or transfer
    latency_ms: int = 0  # the simulator's latency per API call and transfer
    product: Path = REPO  # the directory holding the guestfs_mount package measured
    write_back: bool = False  # the mount's [mount] write_back

    def in_mount(self, guest_path: str) -> Path:
        return self.mount.vm / guest_path.lstrip("/")

    def in_guest(self, guest_path: str) -> Path:
        return self.sim.root / VM / guest_path.lstrip("/")

    def fresh(self, size: int, sub: str = "") -> str:
        """A guest file of `size` bytes the mount has never seen (stocked before the mount started)."""
        return self.data.take(size, f"{self.run_dir}/{sub}".rstrip("/"))

    def out_name(self, stem: str) -> str:
        return f"/{self.run_dir}/{stem}-{time.monotonic_ns()}"


def mib_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / MiB / seconds, 1) if seconds > 0 else 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(argv: list[str], timeout: float) -> float:
    """Run a command (output kept for the error), return its wall time."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')[-800:]}")
    return seconds


def read_through(path: Path, size: int) -> float:
    """open + read to EOF with a 1 MiB buffer, bytes dropped; returns the seconds, checks the size."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    got = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            got += n
    seconds = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"read {got} bytes of {path}, expected {size}")
    return seconds


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used (/proc/PID/stat utime and stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class CpuUse:
    """CPU seconds (user and system apart) the mount and the simulator use over several blocks (`with use:`), per
    GiB moved: where the time of a transfer goes on a machine with few cores, and whether it is ours (user) or the
    kernel's copies and wake-ups (system)."""

    def __init__(self, ctx: Ctx):
        self.pids = {"mount": ctx.mount.proc.pid, "sim": ctx.sim.process.pid}
        self.used = {k: [0.0, 0.0] for k in self.pids}
        self.nbytes = 0

    def measure(self, nbytes: int):
        use = self

        class Block:
            def __enter__(self):
                self.start = {k: cpu_times(pid) for k, pid in use.pids.items()}

            def __exit__(self, *exc):
                if exc[0] is None:
                    for k, pid in use.pids.items():
                        now = cpu_times(pid)
                        for i in (0, 1):
                            use.used[k][i] += now[i] - self.start[k][i]
                    use.nbytes += nbytes

        return Block()

    def per_gib(self, who: str, name: str) -> dict:
        """`{name}_cpu_s_per_gib` (user + system), `{name}_user_s_per_gib`, `{name}_sys_s_per_gib` of `who`."""
        if not self.nbytes:
            return {}
        user, system = (round(t / (self.nbytes / GiB), 2) for t in self.used[who])
        return {f"{name}_cpu_s_per_gib": round(user + system, 2), f"{name}_user_s_per_gib": user,
                f"{name}_sys_s_per_gib": system}


def unlink_guest(ctx: Ctx, guest_path: str) -> None:
    raw.drop_guest_file(ctx.sim, guest_path)


def check_guest_size(ctx: Ctx, guest_path: str, size: int) -> None:
    got = ctx.in_guest(guest_path).stat().st_size
    if got != size:
        raise RuntimeError(f"the guest holds {got} bytes of {guest_path}, expected {size}")


# --- sequential read and time to first byte -------------------------------------------------------------------

def case_read(ctx: Ctx) -> dict:
    size = ctx.sizes.read
    best = {"mount": 0.0, "httpx": 0.0, "curl": 0.0}
    cpu_mount, cpu_raw = CpuUse(ctx), CpuUse(ctx)
    for _ in range(ctx.sizes.repeats):
        name = ctx.fresh(size)
        with cpu_mount.measure(size):
            seconds = read_through(ctx.in_mount(name), size)
        best["mount"] = max(best["mount"], mib_s(size, seconds))
        with cpu_raw.measure(size):
            got = raw.get_httpx(ctx.guest, name)
        assert got["bytes"] == size, got
        best["httpx"] = max(best["httpx"], mib_s(size, got["seconds"]))
        if raw.HAVE_CURL:
            got = raw.get_curl(ctx.guest, name, ctx.timeout)
            assert got["bytes"] == size, got
            best["curl"] = max(best["curl"], mib_s(size, got["seconds"]))
    raw_best = max(best["httpx"], best["curl"])
    return {"mount_read_mib_s": best["mount"], "raw_read_httpx_mib_s": best["httpx"],
            "raw_read_curl_mib_s": best["curl"] or None, "raw_read_mib_s": raw_best,
            "read_ratio": ratio(best["mount"], raw_best), **cpu_mount.per_gib("mount", "mount_read"),
            **cpu_mount.per_gib("sim", "sim_read"), **cpu_raw.per_gib("sim", "sim_raw_read")}


def _mount_first_4k(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        if len(f.read(4096)) != 4096:
            raise RuntimeError(f"short first read of {path}")
        seconds = time.perf_counter() - start
    return seconds


def case_ttfb(ctx: Ctx) -> dict:
    """Time to the first 4 KiB of a file the mount has never seen (lookup, open, read) vs initiate + GET to the
    first byte; also with the directory listed before (the lookup answered from the listing), the usual case
    after an `ls`. Medians."""
    size = ctx.sizes.read
    mount_s, raw_s, listed_s = [], [], []
    for _ in range(ctx.sizes.ttfb_samples):
        name = ctx.fresh(size)
        mount_s.append(_mount_first_4k(ctx.in_mount(name)))
        raw_s.append(raw.get_first_byte(ctx.guest, name))
    names = [ctx.fresh(size, "listed") for _ in range(ctx.sizes.ttfb_samples)]
    os.listdir(ctx.in_mount(f"{ctx.run_dir}/listed"))
    for name in names:
        listed_s.append(_mount_first_4k(ctx.in_mount(name)))
    mount_ms = round(statistics.median(mount_s) * 1000, 2)
    raw_ms = round(statistics.median(raw_s) * 1000, 2)
    listed_ms = round(statistics.median(listed_s) * 1000, 2)
    return {"mount_ttfb_ms": mount_ms, "raw_ttfb_ms": raw_ms, "ttfb_ratio": ratio(mount_ms, raw_ms),
            "mount_ttfb_listed_ms": listed_ms, "ttfb_listed_ratio": ratio(listed_ms, raw_ms)}


# --- sequential write ----------------------------------------------------------------------------------------

def case_write(ctx: Ctx) -> dict:
    """cp into the mount, timed to cp's exit (close, hence the upload, included) vs initiate + PUT.

    Who goes first alternates: on the VMs these runs use, a write into page cache that no file freed just before
    costs the writer several times the system time of one into pages just freed (the guest file of the case
    before, deleted right after it), so the second of two back-to-back cases is cheaper, whichever it is."""
    size = ctx.sizes.read
    source = ctx.data.local(size)
    best = {"mount": 0.0, "httpx": 0.0, "curl": 0.0}
    cpu_mount, cpu_raw = CpuUse(ctx), CpuUse(ctx)

    def mount_side():
        name = ctx.out_name("w")
        with cpu_mount.measure(size):
            seconds = run(["cp", str(source), str(ctx.in_mount(name))], ctx.timeout)
        check_guest_size(ctx, name, size)
        unlink_guest(ctx, name)
        best["mount"] = max(best["mount"], mib_s(size, seconds))

    def raw_side():
        name = ctx.out_name("raw")
        with cpu_raw.measure(size):
            got = raw.put_httpx(ctx.guest, source, name)
        best["httpx"] = max(best["httpx"], mib_s(size, got["seconds"]))
        check_guest_size(ctx, name, size)
        unlink_guest(ctx, name)
        if raw.HAVE_CURL:
            name = ctx.out_name("raw")
            best["curl"] = max(best["curl"], mib_s(size, raw.put_curl(ctx.guest, source, name, ctx.timeout)["seconds"]))
            check_guest_size(ctx, name, size)
            unlink_guest(ctx, name)

    for i in range(ctx.sizes.repeats):
        for side in ((mount_side, raw_side) if i % 2 == 0 else (raw_side, mount_side)):
            side()
    raw_best = max(best["httpx"], best["curl"])
    return {"mount_write_mib_s": best["mount"], "raw_write_httpx_mib_s": best["httpx"],
            "raw_write_curl_mib_s": best["curl"] or None, "raw_write_mib_s": raw_best,
            "write_ratio": ratio(best["mount"], raw_best), **cpu_mount.per_gib("mount", "mount_write"),
            **cpu_mount.per_gib("sim", "sim_write"), **cpu_raw.per_gib("sim", "sim_raw_write")}


# --- metadata: ls -l and rsync -------------------------------------------------------------------------------

def is_guest_call(name: str) -> bool:
    """A guest operation (a GuestFileManager method, or its REST twin, which the simulator counts under the same
    name) or a transfer; not a vCenter inventory or session call (the VM list the mount refreshes every
    vm_list_ttl, logins)."""
    return name.endswith(("InGuest", "FromGuest", "ToGuest")) or name.startswith("guestFile.")


def _calls(stats: dict) -> int:
    return sum(n for name, n in stats.items() if is_guest_call(name))


def _other_calls(stats: dict) -> int:
    return sum(n for name, n in stats.items() if not is_guest_call(name))


def case_list(ctx: Ctx) -> dict:
    entries = ctx.sizes.listing
    if ctx.mount.api == "rest" and ctx.latency_ms > 0:
        entries = min(entries, ctx.sizes.listing_rest_slow)
    directory = ctx.in_mount(ctx.data.listing_dir(entries))
    ctx.sim.reset_stats()
    cold_s = run(["ls", "-l", str(directory)], ctx.timeout)
    cold = ctx.sim.stats()
    ctx.sim.reset_stats()
    warm_s = run(["ls", "-l", str(directory)], ctx.timeout)
    warm = ctx.sim.stats()
    return {"list_entries": entries, "list_calls": _calls(cold), "list_calls_by_method": cold,
            "list_cold_s": round(cold_s, 3), "list_warm_calls": _calls(warm), "list_warm_calls_by_method": warm,
            "list_warm_s": round(warm_s, 3), "list_other_calls": _other_calls(cold),
            "list_warm_other_calls": _other_calls(warm)}


def case_rsync(ctx: Ctx) -> dict:
    files = ctx.sizes.rsync_files
    source = ctx.data.rsync_source(files)
    target = ctx.in_mount(f"{ctx.run_dir}/rsync")
    argv = ["rsync", "-a", f"{source}/", f"{target}/"]
    ctx.sim.reset_stats()
    first_s = run(argv, ctx.timeout)
    first = ctx.sim.stats()
    copied = len(os.listdir(ctx.in_guest(f"{ctx.run_dir}/rsync")))
    if copied != files:
        raise RuntimeError(f"rsync left {copied} files in the guest, expected {files}")
    ctx.sim.reset_stats()
    again_s = run(argv, ctx.timeout)
    again = ctx.sim.stats()
    return {"rsync_files": files, "rsync_s": round(first_s, 3), "rsync_calls": _calls(first),
            "rsync_calls_per_file": round(_calls(first) / files, 2), "rsync_calls_by_method": first,
            "rsync_rerun_s": round(again_s, 3), "rsync_rerun_calls": _calls(again),
            "rsync_rerun_uploads": max(again.get("guestFile.PUT", 0), again.get("InitiateFileTransferToGuest", 0)),
            "rsync_rerun_calls_by_method": again, "rsync_other_calls": _other_calls(first),
            "rsync_rerun_other_calls": _other_calls(again)}


# --- peak RSS of the mount process ---------------------------------------------------------------------------

def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


class PeakRss:
    """The mount process's peak RSS over a block: VmHWM after resetting it (`clear_refs` 5, root or owner),
    and VmRSS sampled every 20 ms as a floor in case the reset is refused."""

    def __init__(self, pid: int):
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()

    def __enter__(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            try:
                self.sampled = max(self.sampled, _status_kib(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        hwm = _status_kib(self.pid, "VmHWM") if self.reset else 0
        self.peak_mib = round(max(hwm, self.sampled) / 1024, 1)


def case_rss(ctx: Ctx) -> dict:
    size = ctx.sizes.rss
    pid = ctx.mount.proc.pid
    before = round(_status_kib(pid, "VmRSS") / 1024, 1)
    name = ctx.fresh(size)
    out = ctx.workdir / f"rss-out-{time.monotonic_ns()}"
    try:
        with PeakRss(pid) as read_peak:
            read_s = run(["cp", str(ctx.in_mount(name)), str(out)], ctx.timeout)
    finally:
        out.unlink(missing_ok=True)
    name = ctx.out_name("rss")
    with PeakRss(pid) as write_peak:
        write_s = run(["cp", str(ctx.data.local(size)), str(ctx.in_mount(name))], ctx.timeout)
    check_guest_size(ctx, name, size)
    unlink_guest(ctx, name)
    return {"rss_file_mib": size // MiB, "rss_before_mib": before, "peak_rss_read_mib": read_peak.peak_mib,
            "peak_rss_write_mib": write_peak.peak_mib, "peak_rss_mib": max(read_peak.peak_mib, write_peak.peak_mib),
            "rss_read_mib_s": mib_s(size, read_s), "rss_write_mib_s": mib_s(size, write_s),
            "rss_peak_reset": read_peak.reset}


# --- the same copies, 8 files at once ------------------------------------------------------------------------

def _together(jobs) -> float:
    """Run the callables at once (threads), return the wall time until the last one ends."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
    return time.perf_counter() - start


def case_parallel(ctx: Ctx) -> dict:
    n, size = ctx.sizes.parallel_files, ctx.sizes.parallel
    total = n * size
    source = ctx.data.local(size)
    result = {"parallel_files": n, "parallel_file_mib": size // MiB}

    names = [ctx.fresh(size) for _ in range(n)]
    result["mount_parallel_read_mib_s"] = mib_s(total, _together(
        [lambda p=ctx.in_mount(name): read_through(p, size) for name in names]))
    result["raw_parallel_read_httpx_mib_s"] = mib_s(total, _together(
        [lambda name=name: raw.get_httpx(ctx.guest, name) for name in names]))
    if raw.HAVE_CURL:
        result["raw_parallel_read_curl_mib_s"] = mib_s(total, _together(
            [lambda name=name: raw.get_curl(ctx.guest, name, ctx.timeout) for name in names]))

    def write_round(put) -> float:
        outs = [ctx.out_name(f"p{i}") for i in range(n)]
        seconds = _together([lambda name=name: put(name) for name in outs])
        for name in outs:
            check_guest_size(ctx, name, size)
            unlink_guest(ctx, name)
        return mib_s(total, seconds)

    result["mount_parallel_write_mib_s"] = write_round(
        lambda name: run(["cp", str(source), str(ctx.in_mount(name))], ctx.timeout))
    result["raw_parallel_write_httpx_mib_s"] = write_round(lambda name: raw.put_httpx(ctx.guest, source, name))
    if raw.HAVE_CURL:
        result["raw_parallel_write_curl_mib_s"] = write_round(
            lambda name: raw.put_curl(ctx.guest, source, name, ctx.timeout))

    for way in ("read", "write"):
        best = max(result.get(f"raw_parallel_{way}_httpx_mib_s") or 0, result.get(f"raw_parallel_{way}_curl_mib_s") or 0)
        result[f"raw_parallel_{way}_mib_s"] = best
        result[f"parallel_{way}_ratio"] = ratio(result[f"mount_parallel_{way}_mib_s"], best)
    return result


def stock(data: Dataset, sizes: Sizes, run_dir: str, cases: list[str]) -> None:
    """Make the fresh guest files the chosen cases will read, before the run's mount starts."""
    wants = {
        "read": [(sizes.read, "", sizes.repeats)],
        "ttfb": [(sizes.read, "", sizes.ttfb_samples), (sizes.read, "listed", sizes.ttfb_samples)],
        "rss": [(sizes.rss, "", 1)],
        "parallel": [(sizes.parallel, "", sizes.parallel_files)],
    }
    for case in cases:
        for size, sub, count in wants.get(case, []):
            data.stock(size, f"{run_dir}/{sub}".rstrip("/"), count)


CASES = {
    "read": case_read,
    "ttfb": case_ttfb,
    "write": case_write,
    "list": case_list,
    "rsync": case_rsync,
    "rss": case_rss,
    "parallel": case_parallel,
}
