"""chmod and touch of a file we have just uploaded, held back briefly so that the changes a program makes in a
row go out as one ChangeFileAttributes call.

rsync and tar close a file, then set its times and then its mode (two guest calls, two fifths of what a small
file cost). A chmod or touch of any other file goes out at once. A held change is what getattr shows at once; it
goes to the guest when the file's last handle is closed (close returns its error), when it is uploaded again,
at unmount, and at the latest `delay` seconds after it was made (a failure then is logged with the path); a
rename takes it along. Only mode and times are held: they are the file owner's own to change, so a refusal is
the rare case. A chown, which a guest login is often refused, is never held: its error must reach the program.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from guestfs_mount.vsphere.model import FileAttributes

HELD_FIELDS = ("permissions", "atime", "mtime")


class PendingAttributes:
    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.clock = clock
        self._held: dict[str, tuple[FileAttributes, float]] = {}  # mount path -> (changes, when due)

    def holdable(self, changes: dict) -> bool:
        return self.delay > 0 and bool(changes) and all(field in HELD_FIELDS for field in changes)

    def hold(self, path: str, changes: dict) -> None:
        held, due = self._held.get(path, (FileAttributes(), self.clock() + self.delay))
        self._held[path] = (dataclasses.replace(held, **changes), due)

    def take(self, path: str) -> FileAttributes | None:
        """The changes held for `path` (now the caller's to send or to fold into an upload), or None."""
        held = self._held.pop(path, None)
        return held[0] if held else None

    def peek(self, path: str) -> FileAttributes | None:
        held = self._held.get(path)
        return held[0] if held else None

    def rename(self, old: str, new: str) -> None:
        """Renamed files (a file, or a directory's tree) keep their held changes; what was renamed over drops its."""
        self.drop_tree(new)
        for key in [k for k in self._held if k == old or k.startswith(old + "/")]:
            self._held[new + key[len(old):]] = self._held.pop(key)

    def drop_tree(self, path: str) -> None:
        for key in [k for k in self._held if k == path or k.startswith(path + "/")]:
            del self._held[key]

    def due(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        return [path for path, (_, due) in self._held.items() if due <= now]

    def paths(self) -> list[str]:
        return list(self._held)

    def next_due(self) -> float | None:
        return min((due for _, due in self._held.values()), default=None)

    def as_changes(self, path: str) -> dict:
        """The held fields of `path` as record fields (for what getattr shows)."""
        held = self.peek(path)
        return {} if held is None else {f: getattr(held, f) for f in HELD_FIELDS if getattr(held, f) is not None}

    def __len__(self) -> int:
        return len(self._held)
