"""Talking to a running mount: where its control socket is, and one request/answer over it.

The mount listens on a private unix socket (fs/control.py). A command sends one JSON object on one line
(`{"op": "status"}`) and reads one JSON object back; the mount closes the connection after answering.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable

from guestfs_mount.config import state_dir

# the systemd unit's StateDirectory=guestfs-mount: where a mount run as a service keeps its socket
SERVICE_STATE_DIR = Path("/var/lib/guestfs-mount")


class NotRunning(Exception):
    """No mount answers at that mount point."""


def mount_id(mountpoint: str) -> str:
    """Names what belongs to one mount point (its spool directory, its control socket): two mounts never share."""
    return hashlib.sha256(mountpoint.encode()).hexdigest()[:12]


def control_socket(mountpoint: str) -> Path:
    """The control socket of the mount at `mountpoint` (an absolute, resolved path)."""
    return state_dir() / "run" / f"{mount_id(mountpoint)}.sock"


def control_sockets(mountpoint: str) -> list[Path]:
    """Where the control socket of a mount may be: our own state directory, then the systemd service's."""
    own = control_socket(mountpoint)
    service = SERVICE_STATE_DIR / "run" / own.name
    return [own] if service == own else [own, service]


def ask(mountpoint: str, request: dict, timeout: float | None) -> dict:
    """Send `request` to the mount at `mountpoint` and return its answer. NotRunning when no mount listens there
    (no socket, or one left by a mount that died); OSError/ValueError when the exchange fails. `timeout` bounds
    each wait on the socket (None: as long as the mount takes, for requests that wait for uploads)."""
    for path in control_sockets(os.path.realpath(mountpoint)):
        try:
            return _exchange(path, request, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            continue
    raise NotRunning(f"no guestfs-mount running at {os.path.realpath(mountpoint)}")


def _exchange(path: Path, request: dict, timeout: float | None) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("the mount's answer is not a JSON object")
    return answer


def asked(mountpoint: str, request: Callable[[], dict], timeout: float | None) -> dict | None:
    """The running mount's answer to `request()`, or None once the reason there is none is printed: no mount
    there, a PATH not in it (`request()`'s ValueError), a socket that cannot be reached, or the mount's error."""
    try:
        answer = ask(mountpoint, request(), timeout)
    except (NotRunning, ValueError) as e:
        print(f"guestfs-mount: {e}", file=sys.stderr)
        return None
    except OSError as e:
        print(f"guestfs-mount: cannot reach the mount at {mountpoint}: {e}", file=sys.stderr)
        return None
    if "error" in answer:
        print(f"guestfs-mount: {answer['error']}", file=sys.stderr)
        return None
    return answer
