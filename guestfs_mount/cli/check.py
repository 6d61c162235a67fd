"""`guestfs-mount check [--config FILE] [--vm NAME ...] [--write] [--json] [--debug]`: walk the whole path to the
VMs' files without mounting, print one line per step (✓ / ✗ and what to do), exit 0 only when every step passed.

Exit codes: 0 all passed (warnings allowed), 1 a step failed, 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio

from guestfs_mount.config import ConfigError, find_config, load
from guestfs_mount.logsetup import setup_logging


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount check",
        description="Check, without mounting, every step from this machine to the files inside the VMs: vCenter's "
                    "address, its TLS certificate, the API and login, the VM list, and per VM the guest login, a "
                    "listing, a download (through the ESXi host) and, with --write, an upload. Exit 0 only when "
                    "all pass.",
    )
    parser.add_argument("--config", metavar="FILE", help="config file (TOML), as for the mount")
    parser.add_argument("--vm", dest="vms", action="append", default=[], metavar="NAME",
                        help="check this VM (repeatable; default: the first powered-on VM of each [vms.*] table, "
                             "among [mount] vms when the config names them)")
    parser.add_argument("--write", action="store_true",
                        help="also upload a small temporary file to each VM, read it back and delete it")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument("--debug", action="store_true", help="log every call to stderr")
    args = parser.parse_args(argv)
    try:
        config = load(find_config(args.config))
        from guestfs_mount.cli.mount import client_config_from

        # the VMs the mount would show: --vm, else [mount] vms (asked for by name where the inventory needs it)
        shown = tuple(args.vms or config.mount.get("vms", ()))
        client_config = client_config_from(config, vm_names=shown)
    except ConfigError as e:
        print(f"guestfs-mount: {e}", file=sys.stderr)
        return 2
    setup_logging(args.debug, secrets=lambda: config.secrets_seen)
    if not args.debug:
        logging.getLogger().setLevel(logging.ERROR)  # each problem is a step's line; the log would say it twice

    from guestfs_mount.check.report import Report, printer
    from guestfs_mount.check.walk import walk

    report = Report(None if args.json else printer(sys.stdout))
    if not args.json:
        print(f"guestfs-mount check of {client_config.url} (config {config.path})", flush=True)
    try:
        trio.run(walk, report, config, client_config, tuple(args.vms), shown, args.write)
    except KeyboardInterrupt:
        print("guestfs-mount: interrupted", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_json(url=client_config.url, config=str(config.path)), indent=2))
    else:
        print(report.summary())
    return 0 if report.passed else 1
