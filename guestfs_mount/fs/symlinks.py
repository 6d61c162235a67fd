"""Symlink targets between the guest and the mount: what `readlink` shows, and what a link made through the mount
writes. Pure logic, no guest calls.

The kernel follows what readlink returns on the local machine. A guest's `/etc/resolv.conf -> /run/...` shown as it
is would open the admin's own file, so by default (`symlinks = "inside"`) every target is shown as a path that stays
inside the VM's directory, as sshfs's `transform_symlinks` does:

- an absolute target becomes relative to the link's directory (`/run/x` seen from `etc/` is `../run/x`);
- `..` past the guest's root stops at the VM's directory (the guest's own kernel stops at `/` too);
- a relative target that already stays inside is shown as it is, so that copying tools see the same text;
- a Windows guest's targets (`C:\\x`, `\\\\server\\share`, `\\\\?\\C:\\x`, `..\\x`) likewise land below the VM's directory,
  on the drive they name (or, for UNC paths, below `UNC/`, which no drive is called), never outside it.

Every shown target is lexically normal (no `.` or `..` after a name), so following it never climbs out through `..`
after another link. `symlinks = "raw"` shows and writes targets unchanged.

A link created through the mount whose target is an absolute path into the same VM's directory of the mount is
written as the guest's own absolute path (`MP/web01/etc/x` -> `/etc/x`); any other target is written as given.
"""

from __future__ import annotations

import posixpath
import re
from typing import Sequence

MODES = ("inside", "raw")

# \\?\C:\x and \??\C:\x (Win32 and NT prefixes for long/device paths); \\?\UNC\server\share\x is a UNC path
_WIN_PREFIX = re.compile(r"^(?:\\\\\?\\|\\\?\?\\)")
_WIN_DRIVE = re.compile(r"^([A-Za-z]):(.*)$", re.S)


def _normal(parts: Sequence[str]) -> list[str]:
    """Components with `.` dropped and `..` applied, stopping at the top (a root's `..` is the root)."""
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return out


def _relative(from_dir: Sequence[str], to: Sequence[str], trailing_slash: bool) -> str:
    """The relative path from directory `from_dir` to `to` (both as components below the same top)."""
    common = 0
    while common < min(len(from_dir), len(to)) and from_dir[common] == to[common]:
        common += 1
    parts = [".."] * (len(from_dir) - common) + list(to[common:])
    text = "/".join(parts) or "."
    return text + "/" if trailing_slash and not text.endswith("/") else text


def _stays_inside(parts: Sequence[str], depth: int) -> bool:
    """Whether a relative target is normal already: leading `..` that climb no higher than the top, then names."""
    climbs = 0
    while climbs < len(parts) and parts[climbs] == "..":
        climbs += 1
    rest = parts[climbs:]
    return climbs <= depth and all(p not in ("", ".", "..") for p in rest)


def shown_target(target: str, link_dirs: Sequence[str], windows: bool = False,
                 drives: Sequence[str] = ("C:",)) -> str:
    """What readlink shows for a guest symlink whose target is `target`.

    `link_dirs` are the components of the link's directory below the VM's directory of the mount: `["etc"]` for
    `/etc/resolv.conf`; on a Windows VM they start with the drive (`["C:", "Users"]` for `C:\\Users\\link`).
    `drives` are the drive directories a Windows VM shows (`settings.windows_drives`)."""
    if target == "":
        return ""
    if windows:
        return _shown_windows(target, list(link_dirs), drives)
    parts = target.split("/")
    trailing = target.endswith("/") and target.strip("/") != ""
    if target.startswith("/"):
        return _relative(link_dirs, _normal(parts), trailing)
    inner = [p for p in parts if p != ""]
    if _stays_inside(inner, len(link_dirs)) and "//" not in target:
        return target
    return _relative(link_dirs, _normal([*link_dirs, *parts]), trailing)


def _drive_dir(letter: str, drives: Sequence[str]) -> str:
    name = f"{letter.upper()}:"
    return next((d for d in drives if d.upper() == name), name)


def _shown_windows(target: str, link_dirs: list[str], drives: Sequence[str]) -> str:
    text = _WIN_PREFIX.sub("", target).replace("\\", "/")
    trailing = text.endswith("/") and text.strip("/") != ""
    own_drive = link_dirs[:1]
    if target.startswith(("\\\\", "//")) and not _WIN_PREFIX.match(target):
        root, rest = ["UNC"], text.lstrip("/")  # \\server\share\x
    elif _WIN_PREFIX.match(target) and text[:4].upper() == "UNC/":
        root, rest = ["UNC"], text[4:]  # \\?\UNC\server\share\x
    elif (m := _WIN_DRIVE.match(text)) is not None:
        root, rest = [_drive_dir(m.group(1), drives)], m.group(2)  # C:\x (and drive-relative C:x, taken from C:\)
    elif text.startswith("/"):
        root, rest = own_drive, text  # \x: the root of the link's own drive
    else:
        # relative: from the link's directory, `..` stopping at its drive's root
        below = link_dirs[1:]
        parts = rest_parts = text.split("/")
        inner = [p for p in rest_parts if p != ""]
        if _stays_inside(inner, len(below)) and "//" not in text:
            return text
        return _relative(link_dirs, own_drive + _normal([*below, *parts]), trailing)
    return _relative(link_dirs, root + _normal(rest.split("/")), trailing)


def guest_target(target: str, mountpoint: str, vm: str) -> str:
    """The target to write in the guest for a symlink made through the mount with `target` (Linux guests): an
    absolute path into this VM's directory of the mount becomes the guest's own absolute path; anything else is
    written as given (a relative target means the same inside the guest)."""
    if not target.startswith("/") or not mountpoint:
        return target
    vm_dir = posixpath.join(posixpath.normpath(mountpoint), vm)
    normal = posixpath.normpath(target)
    if normal == vm_dir:
        return "/"
    if normal.startswith(vm_dir + "/"):
        rest = normal[len(vm_dir):]
        return rest + "/" if target.endswith("/") and rest != "/" else rest
    return target
