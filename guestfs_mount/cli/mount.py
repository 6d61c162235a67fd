"""`guestfs-mount MOUNTPOINT`: parse, load the config, build the client and mount settings, mount.

    guestfs-mount MOUNTPOINT [--config FILE] [--foreground|-f] [-o opt,...] [--vm NAME ...] [--read-only]
                  [--allow-other] [--debug]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Callable

from guestfs_mount import __version__
from guestfs_mount.cli.control import control_socket, mount_id
from guestfs_mount.config import Config, ConfigError, CredentialsTable, find_config, load, state_dir
from guestfs_mount.logsetup import setup_logging

log = logging.getLogger("guestfs_mount")

# -o options that are ours; any other -o option goes to FUSE as it is
OWN_OPTIONS = {"config", "vm", "ro", "rw", "allow_other", "debug", "foreground", "write_back"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount",
        description="Mount the files inside vSphere VMs at MOUNTPOINT/<vm name>/<guest path>.",
        epilog="Other commands: `guestfs-mount demo [DIR]` runs a simulated vCenter with sample VMs and mounts it; "
        "`guestfs-mount status MOUNTPOINT [--json]` shows a running mount's transfers and cache; "
        "`guestfs-mount refresh MOUNTPOINT [PATH]` makes it forget cached listings and attributes; "
        "`guestfs-mount sync MOUNTPOINT [PATH...]` waits for its queued uploads (write_back); "
        "`guestfs-mount check [--vm NAME] [--write] [--json]` walks the path to the VMs' files without mounting; "
        "`guestfs-mount trust URL` shows vCenter's root CAs and writes them for ca_file. "
        "Config: --config FILE, else $XDG_CONFIG_HOME/guestfs-mount/config.toml, else /etc/guestfs-mount/config.toml.",
    )
    parser.add_argument("--version", action="version", version=f"guestfs-mount {__version__}")
    parser.add_argument("mountpoint", help="where to mount (an existing empty directory)")
    parser.add_argument("--config", metavar="FILE", help="config file (TOML)")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground (log to stderr)")
    parser.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
        help="mount options: config=FILE, vm=NAME, ro, allow_other, debug, write_back; others go to FUSE",
    )
    parser.add_argument("--vm", dest="vms", action="append", default=[], metavar="NAME", help="show only this VM (repeatable)")
    parser.add_argument("--read-only", action="store_true", help="mount read-only")
    parser.add_argument("--allow-other", action="store_true", help="let other users see the mount (needs user_allow_other)")
    parser.add_argument("--debug", action="store_true", help="log every operation")
    parser.set_defaults(write_back=False)  # -o write_back
    return parser


def apply_mount_options(args: argparse.Namespace) -> list[str]:
    """Fold `-o a,b=c` into args; returns the options that are FUSE's."""
    fuse_options = []
    for group in args.options:
        for opt in filter(None, (o.strip() for o in group.split(","))):
            key, _, value = opt.partition("=")
            if key not in OWN_OPTIONS:
                fuse_options.append(opt)
            elif key == "config":
                args.config = value
            elif key == "vm":
                args.vms.append(value)
            elif key == "ro":
                args.read_only = True
            elif key == "rw":
                args.read_only = False
            elif key == "allow_other":
                args.allow_other = True
            elif key == "debug":
                args.debug = True
            elif key == "foreground":
                args.foreground = True
            elif key == "write_back":
                args.write_back = True
    return fuse_options


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    fuse_options = apply_mount_options(args)
    try:
        config = load(find_config(args.config))
        mountpoint = _check_mountpoint(args.mountpoint)
    except ConfigError as e:
        print(f"guestfs-mount: {e}", file=sys.stderr)
        return 2
    setup_logging(args.debug, secrets=lambda: config.secrets_seen)
    try:
        client_config = client_config_from(config, vm_names=tuple(args.vms or config.mount.get("vms", ())))
    except ConfigError as e:
        print(f"guestfs-mount: {e}", file=sys.stderr)
        return 2
    settings = mount_settings_from(config, args, mountpoint, fuse_options, client_config.max_guest_calls_per_vm)
    ready = _notify_ready if args.foreground else _daemonize_until_ready(settings)
    return _run(mountpoint, client_config, CredentialsTable(config), settings, ready)


def _run(mountpoint, client_config, credentials, settings, ready: Callable[[], None]) -> int:
    # imported here so that `--help` and config errors do not need pyfuse3 to load
    from guestfs_mount.fs.mount import run_mount
    from guestfs_mount.vsphere.guestfiles import open_client

    try:
        run_mount(mountpoint, lambda: open_client(client_config), credentials, settings, ready=ready)
    except Exception as e:  # the last word on a failed mount is one line, not a traceback
        log.debug("mount failed", exc_info=True)
        log.error("mount of %s failed: %s", mountpoint, e)
        return 1
    return 0


def _check_mountpoint(path: str) -> str:
    mp = Path(path)
    if not mp.is_dir():
        raise ConfigError(f"mount point {path} is not an existing directory")
    return str(mp.resolve())


def client_config_from(config: Config, vm_names: tuple[str, ...] = ()):
    from guestfs_mount.vsphere.guestfiles import ClientConfig

    vc = config.vcenter
    optional = {k: vc[k] for k in ("ca_file", "insecure", "timeout", "connect_timeout", "max_guest_calls_per_vm",
                                   "retries", "list_page_size", "transfer_host", "thumbprint") if k in vc}
    return ClientConfig(url=vc["url"].rstrip("/"), username=vc["username"], password=config.vcenter_password(),
                        api=vc.get("api", "auto"), vm_names=vm_names, **optional)


def mount_settings_from(config: Config, args: argparse.Namespace, mountpoint: str, fuse_options: list[str],
                        guest_calls_per_vm: int = 4):
    from guestfs_mount.config import runs_programs
    from guestfs_mount.fs.settings import MountSettings

    mount, cache = config.mount, config.cache
    sizes = {k: int(cache[k]) for k in ("content_max_mib", "content_file_max_mib", "prefetch_files", "prefetch_max_kib")
             if k in cache}
    if guest_calls_per_vm < 2 and sizes.get("prefetch_files", MountSettings.prefetch_files):
        # a prefetch never takes the last slot of a VM's guest calls: with one slot there is none for it
        log.info("prefetch is off: [vcenter] max_guest_calls_per_vm = %d leaves it no guest call", guest_calls_per_vm)
        sizes["prefetch_files"] = 0
    spool = Path(mount["spool_dir"]) if "spool_dir" in mount else state_dir() / "spool" / mount_id(mountpoint)
    recovery = Path(mount["recovery_dir"]) if "recovery_dir" in mount else state_dir() / "recovered"
    optional_cache = {k: float(cache[k]) for k in ("attr_ttl", "dir_ttl", "vm_list_ttl", "attr_delay")
                      if k in cache}
    return MountSettings(
        spool_dir=spool,
        recovery_dir=recovery,
        read_only=args.read_only or mount.get("read_only", False),
        allow_other=args.allow_other or mount.get("allow_other", False),
        debug=args.debug,
        only_vms=tuple(args.vms or mount.get("vms", ())),
        windows_drives=tuple(mount.get("windows_drives", ("C:",))),
        fuse_options=tuple(fuse_options),
        control_socket=control_socket(mountpoint),
        read_ahead_kb=mount.get("read_ahead_kb", MountSettings.read_ahead_kb),
        stop_timeout=float(mount.get("stop_timeout", MountSettings.stop_timeout)),
        mountpoint=mountpoint,
        symlinks=mount.get("symlinks", MountSettings.symlinks),
        runs_programs=lambda vm_name: runs_programs(config, vm_name),
        guest_calls_per_vm=guest_calls_per_vm,
        write_back=getattr(args, "write_back", False) or mount.get("write_back", False),  # -o write_back
        write_back_max_mib=mount.get("write_back_max_mib", MountSettings.write_back_max_mib),
        write_back_delay=float(mount.get("write_back_delay", MountSettings.write_back_delay)),
        **optional_cache,
        **sizes,
    )


def _notify_ready() -> None:
    """Tell systemd (Type=notify) that the mount is up; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def _daemonize_until_ready(settings) -> Callable[[], None]:
    """Fork; the parent waits until the child's mount is up (exit 0) or the child dies (exit 1).
    Must run before trio or any thread starts."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            status = pipe.read(1)  # the child writes one byte when mounted, or exits (EOF)
        return_code = 0 if status == b"1" else 1
        sys.stdout.flush()
        os._exit(return_code)
    os.close(read_end)
    os.setsid()
    log_file = state_dir() / "guestfs-mount.log"

    def ready() -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log.info("mounted; going to the background, logging to %s", log_file)
        # from here on the terminal is gone: stdout/stderr go to the log file
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)
        os.write(write_end, b"1")
        os.close(write_end)

    return ready

