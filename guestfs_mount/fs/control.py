"""The mount's control socket: `guestfs-mount status` (and the commands that act on a running mount) send one
JSON request on one line, `{"op": NAME, ...}`, and get one JSON object back (cli/control.py is the other end).

Each connection is served in a task of its own, so a request that waits (for uploads, say) never holds up
another. `serve_control` runs in the mount's nursery; a failure there is logged and never ends the mount. The
socket file is private (0600 in a 0700 directory), replaces a stale one left by a crash, and is removed when the
task ends. Answers hold VM names and guest paths only: never a password, a session id or a transfer URL.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[dict]]
IO_TIMEOUT = 5.0  # a client that does not send its request, or does not read its answer, is dropped after this long
MAX_REQUEST = 64 << 10


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


async def serve_control(path: Path, handlers: dict[str, Handler], *,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer requests on the unix socket `path` with `handlers[request["op"]](request)`, until cancelled.
    Reports started once listening (or once it gave up: a mount without a control socket is still a mount)."""
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
            log.warning("no control socket for this mount (status, sync, refresh): cannot listen on %s: %s", path, e)
            task_status.started()
            return
        log.debug("control socket at %s", path)
        task_status.started()
        async with trio.open_nursery() as connections:
            while True:
                conn, _ = await sock.accept()
                connections.start_soon(_serve_one, conn, handlers)
    except Exception:  # a bug here must not take the mount down
        log.exception("control socket %s failed; status is unavailable until the next mount", path)
    finally:
        sock.close()
        if bound:
            try:
                path.unlink()
            except OSError:
                pass


async def _serve_one(conn, handlers: dict[str, Handler]) -> None:
    with conn:
        try:
            with trio.fail_after(IO_TIMEOUT):
                request = await _read_request(conn)
        except (OSError, trio.TooSlowError, ValueError) as e:
            log.debug("control client sent no request: %s", e)
            return
        answer = await _answer(request, handlers)
        try:
            with trio.fail_after(IO_TIMEOUT):
                view = memoryview(json.dumps(answer).encode() + b"\n")
                while view:
                    sent = await conn.send(view)
                    view = view[sent:]
        except (OSError, trio.TooSlowError) as e:
            log.debug("control client went away: %s", e)


async def _read_request(conn) -> dict:
    data = bytearray()
    while b"\n" not in data:
        chunk = await conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    request = json.loads(data.split(b"\n", 1)[0] or b"null")
    if not isinstance(request, dict):
        raise ValueError("the request is not a JSON object")
    return request


async def _answer(request: dict, handlers: dict[str, Handler]) -> dict:
    op = request.get("op")
    handler = handlers.get(op) if isinstance(op, str) else None
    if handler is None:
        return {"error": f"unknown request {op!r}; this mount knows {', '.join(sorted(handlers))}"}
    try:
        return await handler(request)
    except Exception:
        log.exception("control request %r failed", op)
        return {"error": f"the mount could not answer {op!r}; see its log"}
