"""The mounts this process sees, from /proc/self/mountinfo: mount.py finds its own mount's device there (to set
its read-ahead without asking itself), tests and benchmarks see whether a mount is up."""

from __future__ import annotations

import re
from typing import Iterator, NamedTuple


class Mount(NamedTuple):
    device: str  # "major:minor", as /sys/class/bdi names it
    point: str
    fstype: str  # "fuse.guestfs", "ext4", ...


def _unescape(field: str) -> str:
    # mountinfo writes a space, tab, newline or backslash of a path as a 3-digit octal escape (\040 ...); the rest,
    # UTF-8 included, as is
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts() -> Iterator[Mount]:
    """Each mount, oldest first (fields: id, parent, major:minor, root, point, options, optional..., -, type)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            yield Mount(fields[2], _unescape(fields[4]), fields[sep + 1])


def device_of(mountpoint: str) -> str | None:
    """"major:minor" of the newest mount at `mountpoint`, or None."""
    device = None
    for mount in mounts():
        if mount.point == mountpoint:
            device = mount.device
    return device


def fuse_mountpoints() -> set[str]:
    """Mount points of every FUSE filesystem visible to this process."""
    return {m.point for m in mounts() if m.fstype.startswith("fuse")}
