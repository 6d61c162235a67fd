"""The `guestfs-mount` command line: one module per command (as S3QL's `cli/`).

    guestfs-mount MOUNTPOINT [options]        mount (cli/mount.py)
    guestfs-mount status MOUNTPOINT [--json]  a running mount's transfers and figures (cli/status.py)
    guestfs-mount refresh MOUNTPOINT [PATH]   forget cached listings and attributes (cli/refresh.py)
    guestfs-mount sync MOUNTPOINT [PATH...]   wait until queued uploads have landed (cli/sync.py)
    guestfs-mount check [--vm NAME] [--write] walk the path to the VMs' files without mounting (cli/check.py)
    guestfs-mount trust URL [--out FILE]      show vCenter's root CAs, write them for ca_file (cli/trust.py)
    guestfs-mount demo [DIR]                  the simulator with sample VMs, mounted (demo.py)
"""

from __future__ import annotations

import importlib
import sys

# the first word that names a command, and the module whose main(argv) runs it; anything else is a mount point
COMMANDS = {
    "status": "guestfs_mount.cli.status",
    "refresh": "guestfs_mount.cli.refresh",
    "sync": "guestfs_mount.cli.sync",
    "check": "guestfs_mount.cli.check",
    "trust": "guestfs_mount.cli.trust",
    "demo": "guestfs_mount.demo",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # imported on demand: `status` must not need pyfuse3, a mount must not load the demo
    module = COMMANDS.get(argv[0]) if argv else None
    if module is not None:
        return importlib.import_module(module).main(argv[1:])
    from guestfs_mount.cli.mount import main as mount_main

    return mount_main(argv)
