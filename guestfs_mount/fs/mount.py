"""Start-up and shutdown of the mount: deal with spool files a crashed run left (leftovers.py), connect, build the
operations, serve until unmounted or signalled, upload what is dirty, unmount. The control socket
(`guestfs-mount status`, control.py) is served for as long as the mount.

A stop waits at most `stop_timeout` seconds for uploads (those of closes in progress, and of files still open);
whatever is still dirty then is copied to the recovery directory, one log line each, and the mount goes away."""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import AbstractAsyncContextManager
from typing import Callable

import pyfuse3
import trio

from guestfs_mount.fs.control import serve_control
from guestfs_mount.fs.leftovers import recover_leftovers
from guestfs_mount.fs.mountinfo import device_of
from guestfs_mount.fs.operations import GuestOperations
from guestfs_mount.fs.settings import CredentialsLookup, MountSettings
from guestfs_mount.vsphere.guestfiles import GuestFiles

log = logging.getLogger(__name__)

MAX_TASKS = 256  # concurrent FUSE requests; a slow guest must not hold up the others
REQUEST_GRACE = 5.0  # seconds requests still in flight after a stop's uploads may take before they are cut


def fuse_options(settings: MountSettings) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions
    options.add(f"fsname={settings.fsname}")
    options.add("subtype=guestfs")
    options.add("default_permissions")
    if settings.allow_other:
        options.add("allow_other")
    if settings.read_only:
        options.add("ro")
    if settings.debug:
        options.add("debug")
    options.update(settings.fuse_options)
    return options


def set_read_ahead(mountpoint: str, kb: int) -> None:
    """The kernel reads a FUSE file in requests no bigger than the mount's read-ahead (128 KiB by default, and
    FUSE's own init can only lower it); each request costs a round trip through Python, so 1 MiB requests read
    several times faster. Only root may change it (sysfs), so anyone else keeps the default."""
    if kb <= 0:
        return
    try:
        device = device_of(mountpoint)  # not os.stat(): that would ask this very process, which is not serving yet
    except OSError:
        device = None
    if device is None:
        log.debug("read-ahead of %s left alone: not in /proc/self/mountinfo", mountpoint)
        return
    knob = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(knob, "w") as f:
            f.write(str(kb))
    except OSError as e:
        log.debug("read-ahead of %s left at the kernel's default: %s: %s", mountpoint, knob, e.strerror)
    else:
        log.debug("read-ahead of %s set to %d KiB", mountpoint, kb)


def run_mount(mountpoint: str, open_client: Callable[[], AbstractAsyncContextManager[GuestFiles]],
              credentials: CredentialsLookup, settings: MountSettings,
              ready: Callable[[], None] | None = None) -> None:
    """Mount, serve until unmounted or SIGTERM/SIGINT, flush dirty files, unmount. Synchronous (runs trio)."""
    trio.run(_serve, mountpoint, open_client, credentials, settings, ready)


async def _serve(mountpoint, open_client, credentials, settings: MountSettings, ready) -> None:
    settings.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    recover_leftovers(settings.spool_dir, settings.recovery_dir)  # before our first spool file exists
    async with open_client() as client:
        ops = GuestOperations(client, credentials, settings)
        pyfuse3.init(ops, mountpoint, fuse_options(settings))
        # what SIGTERM/SIGINT do once the signal task is gone (the mount is stopping already): nothing, rather than
        # the default, which killed the process in its last uploads when a stop came right after an unmount (the
        # signal task's receiver restores this handler when it ends)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _stopping_already)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, ops, settings.stop_timeout)
                nursery.start_soon(_refresh_on_sighup, ops)
                # the control socket, downloads and FUSE end before the signal task: a SIGTERM that comes while
                # they wind down is still caught, and the socket file is always removed
                async with trio.open_nursery() as serving:
                    ops.nursery = serving
                    if settings.control_socket is not None:
                        # listening before ready(): once the command returns, `status` works
                        await serving.start(serve_control, settings.control_socket,
                                            _control_handlers(mountpoint, client, ops))
                    serving.start_soon(_after_init, ops, mountpoint, settings)
                    serving.start_soon(ops.send_held_attributes)
                    serving.start_soon(ops.attrfill.run)  # REST listings' attributes, for ls -l
                    serving.start_soon(ops.prefetch.run)  # files of directory scans, ahead of their reader
                    serving.start_soon(ops.writeback.run)  # uploads after close (write_back)
                    serving.start_soon(ops.spares.run)  # a spare spool nobody takes is deleted
                    log.info("mounted %s (%s dialect)", mountpoint, getattr(client, "dialect", "?"))
                    if ready is not None:
                        ready()
                    await pyfuse3.main(max_tasks=MAX_TASKS)
                    serving.cancel_scope.cancel()  # unmounted from outside: end the control socket and downloads
                nursery.cancel_scope.cancel()  # then the signal task
        finally:
            with trio.CancelScope(shield=True):
                await _finish_uploads(ops, settings.stop_timeout)
            ops.close_spools()
            pyfuse3.close(unmount=True)
            log.info("unmounted %s (largest write %d bytes, largest read %d)", mountpoint, ops.largest_write,
                     ops.largest_read)


def _stopping_already(signum, frame) -> None:
    log.info("signal %s: the mount is stopping already", signal.Signals(signum).name)


async def _after_init(ops: GuestOperations, mountpoint: str, settings: MountSettings) -> None:
    # the kernel's answer to INIT resets the read-ahead, so it is set once that answer has gone
    await ops.initialized.wait()
    set_read_ahead(mountpoint, settings.read_ahead_kb)


def _control_handlers(mountpoint: str, client: GuestFiles, ops: GuestOperations) -> dict:
    """What the control socket answers (fs/control.py), by request op."""
    started = time.monotonic()

    async def status(request: dict) -> dict:
        return {"mountpoint": mountpoint, "pid": os.getpid(), "dialect": getattr(client, "dialect", None),
                "uptime_s": round(time.monotonic() - started, 1), "transfers": ops.transfers.snapshot(),
                "write_back": ops.settings.write_back, "uploads": ops.writeback.snapshot(), "figures": ops.figures()}

    async def refresh(request: dict) -> dict:
        path = request.get("path", "")
        if not _is_mount_path(path):
            return {"error": f"not a path below the mount point: {path!r}"}
        return await ops.refresh(path)

    async def sync(request: dict) -> dict:
        paths = request.get("paths") or [""]
        if not isinstance(paths, list) or not all(_is_mount_path(p) for p in paths):
            return {"error": f"not paths below the mount point: {paths!r}"}
        return {"failed": await ops.sync(paths)}

    return {"status": status, "refresh": refresh, "sync": sync}


async def _stop_on_signal(ops: GuestOperations, stop_timeout: float) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: uploading dirty files (for up to %g s) and unmounting", signal.Signals(signum).name,
                     stop_timeout)
            with trio.CancelScope(shield=True):
                finished = await _finish_uploads(ops, stop_timeout)
            pyfuse3.terminate()
            # pyfuse3.main returns once every request in flight is answered: a read or rename gets a moment; a close
            # whose upload outlived stop_timeout does not (its bytes are in the recovery directory now)
            if finished:
                await trio.sleep(REQUEST_GRACE)  # cancelled as soon as main returns
            if ops.nursery is not None:
                ops.nursery.cancel_scope.cancel()
            return


def _is_mount_path(path) -> bool:
    """A mount path as inodes.py writes them: "" or names joined by "/", no leading "/", no "." or ".."."""
    return path == "" or isinstance(path, str) and all(p not in ("", ".", "..") for p in path.split("/"))


async def _refresh_on_sighup(ops: GuestOperations) -> None:
    """SIGHUP: forget every cached listing and record, as `guestfs-mount refresh MOUNTPOINT` does."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            log.info("SIGHUP: forgetting cached listings and attributes")
            await ops.refresh("")


async def _finish_uploads(ops: GuestOperations, timeout: float) -> bool:
    """Upload what is dirty for up to `timeout` seconds, then keep the rest in the recovery directory (a stop must
    end: systemd's SIGKILL would lose it). True when every upload finished in time."""
    with trio.move_on_after(timeout) as waiting:
        await ops.flush_all()
    kept = ops.keep_unsaved(f"the mount stopped before its upload finished, {timeout:g} s after the stop began")
    if kept:
        log.warning("stopped with %d file(s) not uploaded: kept in %s", kept, ops.settings.recovery_dir)
    return not waiting.cancelled_caught and not kept
