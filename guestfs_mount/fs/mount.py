"""Start-up and shutdown of the mount: connect, build the operations, serve until unmounted or signalled,
upload what is dirty, unmount."""

from __future__ import annotations

import logging
import signal
from contextlib import AbstractAsyncContextManager
from typing import Callable

import pyfuse3
import trio

from guestfs_mount.fs.operations import GuestOperations
from guestfs_mount.fs.settings import CredentialsLookup, MountSettings
from guestfs_mount.vsphere.guestfiles import GuestFiles

log = logging.getLogger(__name__)

MAX_TASKS = 256  # concurrent FUSE requests; a slow guest must not hold up the others


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


def run_mount(mountpoint: str, open_client: Callable[[], AbstractAsyncContextManager[GuestFiles]],
              credentials: CredentialsLookup, settings: MountSettings,
              ready: Callable[[], None] | None = None) -> None:
    """Mount, serve until unmounted or SIGTERM/SIGINT, flush dirty files, unmount. Synchronous (runs trio)."""
    trio.run(_serve, mountpoint, open_client, credentials, settings, ready)


async def _serve(mountpoint, open_client, credentials, settings: MountSettings, ready) -> None:
    settings.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with open_client() as client:
        ops = GuestOperations(client, credentials, settings)
        pyfuse3.init(ops, mountpoint, fuse_options(settings))
        try:
            log.info("mounted %s (%s dialect)", mountpoint, getattr(client, "dialect", "?"))
            if ready is not None:
                ready()
            async with trio.open_nursery() as nursery:
                ops.nursery = nursery
                nursery.start_soon(_stop_on_signal, ops, nursery)
                await pyfuse3.main(max_tasks=MAX_TASKS)
                nursery.cancel_scope.cancel()  # unmounted from outside: end the signal task and downloads
        finally:
            with trio.CancelScope(shield=True):
                await ops.flush_all()
            ops.close_spools()
            pyfuse3.close(unmount=True)
            log.info("unmounted %s (largest write %d bytes, largest read %d)", mountpoint, ops.largest_write,
                     ops.largest_read)


async def _stop_on_signal(ops: GuestOperations, nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: uploading dirty files and unmounting", signal.Signals(signum).name)
            with trio.CancelScope(shield=True):
                await ops.flush_all()
            pyfuse3.terminate()
            return
