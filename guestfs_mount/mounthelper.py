"""`mount.fuse.guestfs`: what mount(8) runs for `mount -t fuse.guestfs SOURCE DIR -o OPTS` and fstab lines.

mount(8) calls `/sbin/mount.fuse.guestfs SOURCE DIR [-sfnv] [-o OPTS]` (link it there from the venv, see
docs/usage.md). SOURCE is a label only (e.g. `vcenter`). Options that belong to mount(8), systemd or fstab
(`_netdev`, `x-systemd.*`, `noauto`, `nofail`, ...) are dropped; the rest go to `guestfs-mount DIR -o ...`.
"""

from __future__ import annotations

import sys

from guestfs_mount import cli

# options meant for mount(8), systemd's fstab generator or fstab itself, never for the filesystem
FSTAB_ONLY = {"_netdev", "auto", "noauto", "nofail", "user", "users", "nouser", "owner", "group", "defaults", "rw"}
FSTAB_ONLY_PREFIXES = ("x-", "comment=")


def translate(argv: list[str]) -> tuple[list[str], bool]:
    """mount-helper arguments -> (guestfs-mount arguments, whether mount asked only to pretend with -f)."""
    positional, options, fake = [], [], False
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            options.extend(next(it, "").split(","))
        elif arg.startswith("-o") and len(arg) > 2:
            options.extend(arg[2:].split(","))
        elif arg == "-t":
            next(it, None)  # the type (fuse.guestfs) is who we are
        elif arg in ("-s", "-n", "-v"):
            pass  # sloppy, no-mtab, verbose: nothing to do for a FUSE mount
        elif arg == "-f":
            fake = True
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise SystemExit("usage: mount.fuse.guestfs SOURCE MOUNTPOINT [-o config=FILE,...]")
    kept = [o for o in options if o and o not in FSTAB_ONLY and not o.startswith(FSTAB_ONLY_PREFIXES)]
    result = [positional[1]]
    if kept:
        result += ["-o", ",".join(kept)]
    return result, fake


def main(argv: list[str] | None = None) -> int:
    args, fake = translate(sys.argv[1:] if argv is None else argv)
    return 0 if fake else cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
