"""The latency suite's cases: what ordinary commands cost at real vCenter latency, in wall time and guest calls
(`/_sim/stats`, reset before each command). Beside `list` (cases.py): `cp -r` of many small files out of the
guest, `rsync -a` of many small files into it (timed until `guestfs-mount sync` returns: with write_back the
uploads go on after rsync), re-reading a file (unchanged, then changed on the guest), a vim edit, and the mount's
peak RSS while its content cache fills."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

from benchmarks.cases import Ctx, PeakRss, _calls, _other_calls, run
from benchmarks.data import MiB, made_once

VIM_FILE = 16 << 10
# the product's default [cache] attr_ttl: how long a record is trusted (the suite runs the product's defaults)
ATTR_TTL = 5.0


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _figures(prefix: str, seconds: float, stats: dict, per: int | None = None) -> dict:
    out = {f"{prefix}_s": round(seconds, 3), f"{prefix}_calls": _calls(stats),
           f"{prefix}_calls_by_method": stats, f"{prefix}_other_calls": _other_calls(stats)}
    if per:
        out[f"{prefix}_calls_per_file"] = round(_calls(stats) / per, 2)
    return out


def case_cpr(ctx: Ctx) -> dict:
    """`cp -r` of a directory of small files out of the guest into a local directory; every copy's sha256
    checked against the guest's file."""
    files = ctx.sizes.cpr_files
    source = ctx.data.small_files_dir(files)
    out = ctx.workdir / f"cpr-{time.monotonic_ns()}"
    try:
        ctx.sim.reset_stats()
        seconds = run(["cp", "-r", str(ctx.in_mount(source)), str(out)], ctx.timeout)
        stats = ctx.sim.stats()
        guest_dir = ctx.in_guest(source)
        names = sorted(os.listdir(guest_dir))
        copied = sorted(os.listdir(out))
        if copied != names:
            raise RuntimeError(f"cp -r copied {len(copied)} files, the guest has {len(names)}")
        bad = [n for n in names if _sha256(out / n) != _sha256(guest_dir / n)]
        if bad:
            raise RuntimeError(f"{len(bad)} copies differ from the guest's files, e.g. {bad[:3]}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"cpr_files": files, **_figures("cpr", seconds, stats, files), "cpr_sha256_ok": True}


def case_rsync_in(ctx: Ctx) -> dict:
    """`rsync -a` of small files (mode and mtime of their own each) into a new guest directory, timed until
    `guestfs-mount sync` returns (a product without the command has no queue: rsync's end is the end); every
    file's sha256, mode and mtime checked on the guest; then the same rsync again, which must upload nothing."""
    files = ctx.sizes.rsync_files
    source = ctx.data.rsync_source(files, modes=True)
    target = f"{ctx.run_dir}/rsync-in-{time.monotonic_ns()}"
    argv = ["rsync", "-a", f"{source}/", f"{ctx.in_mount(target)}/"]
    ctx.sim.reset_stats()
    start = time.perf_counter()
    rsync_s = run(argv, ctx.timeout)
    _sync(ctx)
    seconds = time.perf_counter() - start
    stats = ctx.sim.stats()
    guest_dir = ctx.in_guest(target)
    names = sorted(os.listdir(source))
    if sorted(os.listdir(guest_dir)) != names:
        raise RuntimeError(f"the guest has {len(os.listdir(guest_dir))} files after rsync, expected {files}")
    for name in names:
        local, guest = os.stat(source / name), os.stat(guest_dir / name)
        if (local.st_mode, int(local.st_mtime)) != (guest.st_mode, int(guest.st_mtime)):
            raise RuntimeError(f"{name}: mode/mtime {oct(guest.st_mode)}/{guest.st_mtime} on the guest, "
                               f"{oct(local.st_mode)}/{local.st_mtime} here")
        if _sha256(source / name) != _sha256(guest_dir / name):
            raise RuntimeError(f"{name}: the guest's copy differs")
    ctx.sim.reset_stats()
    again_s = run(argv, ctx.timeout)
    _sync(ctx)
    again = ctx.sim.stats()
    return {"rsync_in_files": files, "rsync_in_write_back": ctx.write_back,
            **_figures("rsync_in", seconds, stats, files), "rsync_in_rsync_only_s": round(rsync_s, 3),
            "rsync_in_checked": True, "rsync_in_rerun_s": round(again_s, 3),
            "rsync_in_rerun_uploads": max(again.get("guestFile.PUT", 0), again.get("InitiateFileTransferToGuest", 0)),
            "rsync_in_rerun_calls_by_method": again}


def _sync(ctx: Ctx) -> None:
    """`guestfs-mount sync MOUNTPOINT`, by the product measured (one that has the command)."""
    if not (ctx.product / "guestfs_mount" / "cli" / "sync.py").exists():
        return
    done = subprocess.run([sys.executable, "-m", "guestfs_mount", "sync", str(ctx.mount.mp)], capture_output=True,
                          timeout=ctx.timeout, cwd=ctx.product, env=dict(os.environ, PYTHONPATH=str(ctx.product)))
    if done.returncode != 0:
        raise RuntimeError(f"guestfs-mount sync exited {done.returncode}: {done.stderr.decode(errors='replace')}")


def drop_page_cache(path) -> None:
    """Forget the kernel's cached pages of a file, as memory pressure would: a read then reaches the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cat(ctx: Ctx, guest_path: str) -> tuple[bytes, float, dict]:
    """Read a file through the mount (its pages dropped from the kernel's cache first, which opens it: counted
    and timed with the read, as cat's own open would be); bytes, seconds, calls."""
    ctx.sim.reset_stats()
    start = time.perf_counter()
    drop_page_cache(ctx.in_mount(guest_path))
    data = ctx.in_mount(guest_path).read_bytes()
    return data, time.perf_counter() - start, ctx.sim.stats()


def _transfers(stats: dict) -> int:
    return stats.get("guestFile.GET", 0)


def case_reread(ctx: Ctx) -> dict:
    """Read a file (mtime well in the past) through the mount, again at once, again once its record expired;
    then change it on the guest and read it once the record expired: the new bytes must come."""
    path = ctx.data.take_own(ctx.sizes.reread, f"{ctx.run_dir}/own")
    guest = ctx.in_guest(path)
    first, first_s, first_stats = _cat(ctx, path)
    if first != guest.read_bytes():
        raise RuntimeError("the first read differs from the guest's file")
    again, again_s, again_stats = _cat(ctx, path)
    time.sleep(ATTR_TTL + 0.5)
    later, later_s, later_stats = _cat(ctx, path)
    new = os.urandom(len(first) + 1)
    guest.write_bytes(new)
    time.sleep(ATTR_TTL + 0.5)
    changed, changed_s, changed_stats = _cat(ctx, path)
    return {"reread_file_kib": len(first) >> 10, "reread_first_s": round(first_s, 3),
            "reread_first_transfers": _transfers(first_stats),
            "reread_again_s": round(again_s, 3), "reread_again_calls": _calls(again_stats),
            "reread_again_transfers": _transfers(again_stats),
            "reread_after_ttl_s": round(later_s, 3), "reread_after_ttl_calls": _calls(later_stats),
            "reread_after_ttl_transfers": _transfers(later_stats),
            "reread_same_bytes": again == first and later == first,
            "reread_changed_new_bytes": changed == new, "reread_changed_transfers": _transfers(changed_stats),
            "reread_changed_calls_by_method": changed_stats}


def case_vim(ctx: Ctx) -> dict:
    """`vim -es` opens a small file, appends a line and saves it (swap file, backup: vim's defaults)."""
    path = ctx.data.take_own(VIM_FILE, f"{ctx.run_dir}/own", text=True)
    ctx.sim.reset_stats()
    seconds = run(["vim", "-es", "-N", "-u", "DEFAULTS", "-i", "NONE", "-c", "normal! Goedited", "-c", "wq",
                   str(ctx.in_mount(path))], ctx.timeout)
    stats = ctx.sim.stats()
    if not ctx.in_guest(path).read_bytes().endswith(b"edited\n"):
        raise RuntimeError("vim's edit is not on the guest")
    return _figures("vim", seconds, stats)


def case_ls_busy(ctx: Ctx) -> dict:
    """`ls` of a directory the mount has not listed (one guest call) while `cp -r` copies small files out of the
    guest (and the mount fetches ahead of it): how long a program's call waits behind a scan's."""
    source = ctx.data.small_files_dir(ctx.sizes.cpr_files, "busy")  # not the one cpr read (and the mount kept)
    other = f"{ctx.run_dir}/busy"
    os.listdir(ctx.in_mount(ctx.run_dir))  # so the ls below is the listing alone
    out = ctx.workdir / f"busy-{time.monotonic_ns()}"
    cp = subprocess.Popen(["cp", "-r", str(ctx.in_mount(source)), str(out)], stdin=subprocess.DEVNULL)
    try:
        time.sleep(min(2.0, ctx.sizes.cpr_files / 200))  # well into the scan
        if cp.poll() is not None:
            raise RuntimeError("cp -r ended before the ls")
        ctx.sim.reset_stats()
        seconds = run(["ls", str(ctx.in_mount(other))], ctx.timeout)
        during = ctx.sim.stats()
    finally:
        cp.kill()
        cp.wait(30)
        shutil.rmtree(out, ignore_errors=True)
    return {"ls_busy_s": round(seconds, 3), "ls_busy_calls_meanwhile": _calls(during)}


def case_cache_rss(ctx: Ctx) -> dict:
    """The mount's peak RSS while `cp` reads files adding up to more than the content cache holds (1 GiB by
    default; the quick sizes do not fill it), then whether the last one is read again from the cache."""
    size, count = ctx.sizes.cache_file, ctx.sizes.cache_files
    names = [ctx.fresh(size, "cache") for _ in range(count)]
    pid = ctx.mount.proc.pid
    with PeakRss(pid) as peak:
        for name in names:
            run(["cp", str(ctx.in_mount(name)), os.devnull], ctx.timeout)
    ctx.sim.reset_stats()
    drop_page_cache(ctx.in_mount(names[-1]))
    run(["cp", str(ctx.in_mount(names[-1])), os.devnull], ctx.timeout)
    again = ctx.sim.stats()
    return {"cache_fill_mib": size * count // MiB, "cache_fill_peak_rss_mib": peak.peak_mib,
            "cache_last_again_transfers": _transfers(again)}


def stock(data, sizes, run_dir: str, cases: list[str]) -> None:
    """Make the guest files the chosen latency cases read, before the run's mount starts."""
    if "cache_rss" in cases:
        data.stock(sizes.cache_file, f"{run_dir}/cache", sizes.cache_files)
    if "reread" in cases:
        data.stock_own(sizes.reread, f"{run_dir}/own")
    if "vim" in cases:
        data.stock_own(VIM_FILE, f"{run_dir}/own", text=True)
    if "cpr" in cases:
        data.small_files_dir(sizes.cpr_files)
    if "ls_busy" in cases:
        data.small_files_dir(sizes.cpr_files, "busy")
        made_once(data.vm_root / run_dir / "busy", lambda d: [(d / f"e{i}").touch() for i in range(10)])


LATENCY_CASES = {
    "cpr": case_cpr,
    "rsync_in": case_rsync_in,
    "reread": case_reread,
    "vim": case_vim,
    "ls_busy": case_ls_busy,
    "cache_rss": case_cache_rss,
}
