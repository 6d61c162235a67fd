"""What `guestfs-mount status` shows of the transfers moving bytes now.

`LiveTransfers` is fed from where the bytes flow (the spool's download loop, an upload's `progress` callback);
a transfer leaves it when it ends, however it ends. It holds VM names and guest paths only: never a password, a
session id or a transfer URL. The control socket (control.py) hands its snapshot out.
"""

from __future__ import annotations

import itertools
import time


class LiveTransfer:
    """One download or upload in flight. Use as a context manager: leaving it takes it off the registry."""

    def __init__(self, registry: "LiveTransfers", key: int, vm: str, guest_path: str, direction: str,
                 total: int | None) -> None:
        self._registry = registry
        self._key = key
        self.vm = vm
        self.guest_path = guest_path
        self.direction = direction  # "download" | "upload"
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def advance(self, done: int) -> None:
        """Bytes moved so far (the upload's `progress` callback)."""
        self.done = done

    def end(self) -> None:
        self._registry._live.pop(self._key, None)

    def __enter__(self) -> "LiveTransfer":
        return self

    def __exit__(self, *exc) -> None:
        self.end()

    def as_dict(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"vm": self.vm, "path": self.guest_path, "direction": self.direction, "done": self.done,
                "total": self.total, "elapsed_s": round(elapsed, 3), "rate_bps": round(self.done / elapsed, 1)}


class LiveTransfers:
    """The registry of transfers in flight in this mount."""

    def __init__(self) -> None:
        self._live: dict[int, LiveTransfer] = {}
        self._keys = itertools.count(1)

    def start(self, vm: str, guest_path: str, direction: str, total: int | None) -> LiveTransfer:
        key = next(self._keys)
        live = self._live[key] = LiveTransfer(self, key, vm, guest_path, direction, total)
        return live

    def __len__(self) -> int:
        return len(self._live)

    def snapshot(self) -> list[dict]:
        return [t.as_dict() for t in sorted(self._live.values(), key=lambda t: t.started)]
