"""What `guestfs-mount status` shows: the transfers moving bytes now, and a control socket that hands out one
JSON document per connection.

`LiveTransfers` is fed from where the bytes flow (the spool's download loop, an upload's `progress` callback);
a transfer leaves it when it ends, however it ends. It holds VM names and guest paths only: never a password, a
session id or a transfer URL. `serve_status` runs in the mount's nursery; a failure there is logged and never
ends the mount. The socket file is private (0600 in a 0700 directory), replaces a stale one left by a crash,
and is removed when the task ends.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Callable

import trio

log = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0  # a client that does not read its document is dropped after this long


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


def _prepare(path: Path) -> None:
    """The socket's directory (0700), and no file where the socket goes (a crash may have left one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    log.info("replacing stale control socket %s", path)
    path.unlink()


async def serve_status(path: Path, document: Callable[[], dict], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `document()` as JSON to each connection on the unix socket `path`, until cancelled. Reports started
    once listening (or once it gave up: a mount without `status` is still a mount)."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock = trio.socket.from_stdlib_socket(raw)
    bound = False
    try:
        try:
            _prepare(path)
            # the socket file is created 0600, never briefly wider; a plain bind: no checkpoint under this umask
            old_umask = os.umask(0o177)
            try:
                raw.bind(str(path))
            finally:
                os.umask(old_umask)
            bound = True
            sock.listen(8)
        except OSError as e:
            log.warning("no status for this mount: cannot listen on %s: %s", path, e)
            task_status.started()
            return
        log.debug("status socket at %s", path)
        task_status.started()
        while True:
            conn, _ = await sock.accept()
            with conn:
                await _answer(conn, document)
    except Exception:  # a bug here must not take the mount down
        log.exception("status socket %s failed; status is unavailable until the next mount", path)
    finally:
        sock.close()
        if bound:
            try:
                path.unlink()
            except OSError:
                pass


async def _answer(conn, document: Callable[[], dict]) -> None:
    try:
        data = json.dumps(document()).encode() + b"\n"
    except Exception:
        log.exception("status document failed")
        data = json.dumps({"error": "the mount could not build its status; see its log"}).encode() + b"\n"
    try:
        with trio.fail_after(SEND_TIMEOUT):
            view = memoryview(data)
            while view:
                sent = await conn.send(view)
                view = view[sent:]
    except (OSError, trio.TooSlowError) as e:
        log.debug("status client went away: %s", e)
