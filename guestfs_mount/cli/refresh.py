"""`guestfs-mount refresh MOUNTPOINT [PATH]`: make a running mount forget its cached listings and attributes (of
PATH and below, or all), so a change made inside the guest shows at once instead of after the TTLs. SIGHUP to
the mount's process does the same for the whole mount."""

from __future__ import annotations

import argparse
import os

from guestfs_mount.cli.control import asked

REFRESH_TIMEOUT = 30.0  # seconds: the kernel's invalidations may wait for requests in flight


def mount_path(mountpoint: str, path: str | None) -> str:
    """PATH (absolute, or relative to the current directory) as a path below the mount point: "vm1/etc". Not
    resolved through the mount: a guest symlink on the way must not lead somewhere else."""
    if path is None:
        return ""
    relative = os.path.relpath(os.path.abspath(path), os.path.realpath(mountpoint))
    if relative == ".":
        return ""
    if relative == ".." or relative.startswith("../"):
        raise ValueError(f"{path} is not inside the mount at {os.path.realpath(mountpoint)}")
    return relative


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount refresh",
        description="Forget a running mount's cached listings and attributes (under PATH, or all), so changes "
                    "made inside the guests show now.",
    )
    parser.add_argument("mountpoint", help="where guestfs-mount is mounted")
    parser.add_argument("path", nargs="?", help="a file or directory in the mount (default: everything)")
    args = parser.parse_args(argv)
    answer = asked(args.mountpoint, lambda: {"op": "refresh", "path": mount_path(args.mountpoint, args.path)},
                   REFRESH_TIMEOUT)
    if answer is None:
        return 1
    target = answer["path"]
    where = os.path.join(os.path.realpath(args.mountpoint), target) if target else os.path.realpath(args.mountpoint)
    print(f"refreshed {where}: {answer.get('records', 0)} records and {answer.get('listings', 0)} listings "
          f"forgotten")
    return 0
