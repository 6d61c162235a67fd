"""`guestfs-mount sync MOUNTPOINT [PATH...]`: wait until every upload a running mount has queued (write_back), under
the PATHs or all, has landed on the guest, and every chmod/touch it holds there (`attr_delay`) is sent. Exit 0 when
they all did; 1 with one line per file (and where its bytes are kept) when any failed since the last sync; 2 when
no mount answers at MOUNTPOINT or a PATH is not in it.

With write_back off there is never an upload queued (close waits for its upload): sync sends what is held and
returns."""

from __future__ import annotations

import argparse
import sys

from guestfs_mount.cli.control import asked
from guestfs_mount.cli.refresh import mount_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount sync",
        description="Wait until a running mount's queued uploads (under PATH..., or all) have landed on the guests. "
                    "Exit 1, with one line per file, when any failed.",
    )
    parser.add_argument("mountpoint", help="where guestfs-mount is mounted")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories in the mount (default: all)")
    args = parser.parse_args(argv)
    try:
        # no timeout: uploads take as long as they take (Ctrl-C stops waiting, not the uploads)
        answer = asked(args.mountpoint,
                       lambda: {"op": "sync", "paths": [mount_path(args.mountpoint, p) for p in args.paths] or [""]},
                       None)
    except KeyboardInterrupt:
        return 130
    if answer is None:
        return 2
    failed = answer.get("failed") or []
    for f in failed:
        if f.get("attributes"):
            print(f"guestfs-mount: chmod/touch of {f.get('path')} not applied on the guest: {f.get('error')}",
                  file=sys.stderr)
            continue
        kept = f"its content is kept in {f['kept']}" if f.get("kept") else "its content could not be kept"
        print(f"guestfs-mount: upload of {f.get('path')} failed: {f.get('error')}; {kept}", file=sys.stderr)
    return 1 if failed else 0
