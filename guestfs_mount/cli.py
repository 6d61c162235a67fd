"""The `guestfs-mount` command line."""

from __future__ import annotations

import argparse
import sys

from guestfs_mount import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount",
        description="Mount the files inside vSphere VMs at MOUNTPOINT/<vm name>/<guest path>.",
    )
    parser.add_argument("--version", action="version", version=f"guestfs-mount {__version__}")
    parser.add_argument("mountpoint", nargs="?", help="where to mount (an empty directory)")
    parser.add_argument("--config", metavar="FILE", help="config file (TOML)")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("--debug", action="store_true", help="log every operation")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mountpoint is None:
        parser.print_help()
        return 2
    print("guestfs-mount: the mount is not built yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
