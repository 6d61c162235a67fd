"""The /guestFile endpoint: a registry of one-shot transfer URLs, and streaming between socket and disk.

Bodies move in 1 MiB chunks through one reused buffer, so memory stays flat whatever the file size; a throttled VM's bodies move in
64 KiB chunks with a pause after each (read anew per chunk, so lifting the throttle speeds a transfer in flight). A URL is spent by its first
successful request, lives 10 minutes, and dies (cutting any request in flight) when its VM leaves poweredOn.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .guestfs import Attributes, apply_attributes

CHUNK = 1 << 20
LIFETIME = 600.0
# What a faulted GET sends before it cuts the connection.
PARTIAL_BYTES = 64 * 1024
THROTTLED_CHUNK = 64 * 1024

# bytes per second allowed now (0: unlimited), asked before each chunk
Throttle = Callable[[], int]


def _no_throttle() -> int:
    return 0


def _chunk(throttle: Throttle) -> tuple[int, int]:
    """(chunk size, bytes per second) for the next chunk."""
    rate = throttle()
    return (min(CHUNK, THROTTLED_CHUNK), rate) if rate > 0 else (CHUNK, 0)


def _pause(n: int, rate: int) -> None:
    if rate > 0:
        time.sleep(n / rate)


@dataclass
class Transfer:
    id: int
    token: str
    vm: str
    direction: str  # "get" | "put"
    host_path: str
    guest_path: str
    size: int = 0  # declared size for a PUT
    attrs: Attributes | None = None
    overwrite: bool = True
    created: float = field(default_factory=time.monotonic)
    in_use: bool = False
    sockets: list = field(default_factory=list)
    dead: bool = False


class TransferRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_id: dict[int, Transfer] = {}
        self._next = 1

    def create(self, **kw) -> Transfer:
        with self._lock:
            t = Transfer(id=self._next, token=secrets.token_hex(16), **kw)
            self._next += 1
            self._by_id[t.id] = t
            self._sweep()
            return t

    def get(self, transfer_id: int) -> Transfer | None:
        with self._lock:
            return self._by_id.get(transfer_id)

    def _sweep(self) -> None:
        now = time.monotonic()
        for tid in [tid for tid, t in self._by_id.items() if not t.in_use and now - t.created > LIFETIME]:
            del self._by_id[tid]

    def claim(self, transfer_id: str, token: str, direction: str, sock: socket.socket) -> Transfer | str:
        """The transfer for a request, marked in use; or why not: "gone" (404) or "busy" (409)."""
        try:
            tid = int(transfer_id)
        except (TypeError, ValueError):
            return "gone"
        with self._lock:
            t = self._by_id.get(tid)
            if (
                t is None
                or t.dead
                or not secrets.compare_digest(t.token, token or "")
                or t.direction != direction
                or time.monotonic() - t.created > LIFETIME
            ):
                return "gone"
            if t.in_use:
                return "busy"
            t.in_use = True
            t.sockets.append(sock)
            return t

    def release(self, t: Transfer, success: bool, sock: socket.socket) -> None:
        """End a request: a success spends the URL; a failure leaves it usable (unless its VM killed it)."""
        with self._lock:
            t.in_use = False
            if sock in t.sockets:
                t.sockets.remove(sock)
            if success or t.dead:
                self._by_id.pop(t.id, None)

    def abort_vm(self, vm_name: str) -> None:
        """Kill every URL of a VM and cut its transfers in flight (their sockets shut down at once)."""
        with self._lock:
            doomed = [t for t in self._by_id.values() if t.vm == vm_name]
            for t in doomed:
                t.dead = True
                if not t.in_use:
                    del self._by_id[t.id]
                for s in t.sockets:
                    _cut(s)

    def abort_all(self) -> None:
        with self._lock:
            names = {t.vm for t in self._by_id.values()}
        for name in names:
            self.abort_vm(name)


def _cut(sock: socket.socket) -> None:
    """Shut a connection down under its handler's feet. Through a dup of the descriptor, so that an
    SSLSocket's state, owned by the handler thread, is left alone; the handler then fails with an OSError."""
    try:
        dup = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


class Aborted(Exception):
    """The transfer was cut (power change, planned fault, client gone)."""


def send_file(t: Transfer, wfile, fault: bool, throttle: Throttle = _no_throttle) -> None:
    """Write the file's bytes (headers already sent). With `fault`, stop after a few bytes."""
    limit = PARTIAL_BYTES if fault else None
    sent = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(t.host_path, "rb") as f:
        while True:
            if t.dead:
                raise Aborted("VM power state changed")
            size, rate = _chunk(throttle)
            want = size if limit is None else min(size, limit - sent)
            if want <= 0:
                raise Aborted("planned fault")
            n = f.readinto(view[:want])
            if not n:
                return
            wfile.write(view[:n])
            sent += n
            _pause(n, rate)


def receive_file(t: Transfer, rfile, length: int, fault: bool, throttle: Throttle = _no_throttle) -> None:
    """Read exactly `length` bytes into a temp file beside the target, then rename it into place.

    Nothing is written to the target unless every byte arrived; `fault` reads some bytes then gives up.
    """
    directory = os.path.dirname(t.host_path)
    fd, tmp = tempfile.mkstemp(prefix=".guestfs-sim-", dir=directory)
    # one buffer for the whole body, filled by as many socket reads as it takes and written in one go: a new
    # bytes object per read cost a fresh mapping (page faults) per MiB, whatever the client's pieces
    view = memoryview(bytearray(min(CHUNK, length) or 1))
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            left = length
            while left:
                if t.dead:
                    raise Aborted("VM power state changed")
                if fault and length - left >= min(PARTIAL_BYTES, length // 2):
                    raise Aborted("planned fault")
                size, rate = _chunk(throttle)
                n = rfile.readinto(view[:min(size, left)])
                if not n:
                    raise Aborted("client closed the connection early")
                done = 0
                while done < n:  # a raw file may take less than asked
                    done += out.write(view[done:n])
                left -= n
                _pause(n, rate)
            if fault:
                raise Aborted("planned fault")
        os.chmod(tmp, 0o644)
        if t.attrs is not None:
            apply_attributes(tmp, t.attrs)
        if not t.overwrite and os.path.lexists(t.host_path):
            raise FileExistsError(17, "File exists", t.guest_path)
        os.replace(tmp, t.host_path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
