"""The client's one exception hierarchy. Catch at the level you care about:

    VSphereError                  anything the client raises; `.errno` is what a filesystem should return
    ├── GuestFileError            a guest operation failed: `.fault` (VI fault class or REST error_type/reason),
    │   │                          `.path` (guest path), `.vm` (VM id)
    │   ├── GuestLoginError       the guest rejected the credentials (InvalidGuestLogin; REST 401 on a guest op)
    │   └── VMUnavailableError    powered off / suspended / Tools not running or not ready (EHOSTDOWN)
    ├── AuthenticationError       vCenter refused the login (InvalidLogin; EACCES)
    ├── TransferError             a GET/PUT of a transfer URL failed or was cut short (EIO unless more precise)
    ├── ProtocolError             the server answered something that makes no sense: HTML, truncated or wrongly
    │                              typed JSON, a body longer or shorter than announced (EIO, details in the message)
    ├── ConnectionFailed          vCenter unreachable or timing out (ENOTCONN, or ETIMEDOUT for a timeout)
    └── UnsupportedVCenter        this vCenter (its version) or this setup cannot work with the chosen dialect; the
                                   message says what to use instead (EOPNOTSUPP)

Messages never contain passwords, session tokens or transfer-URL tokens.
"""

from __future__ import annotations

import errno as _errno


class VSphereError(Exception):
    errno: int = _errno.EIO

    def __init__(self, message: str, *, errno: int | None = None):
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class GuestFileError(VSphereError):
    def __init__(
        self,
        message: str,
        *,
        errno: int | None = None,
        fault: str | None = None,
        path: str | None = None,
        vm: str | None = None,
    ):
        super().__init__(message, errno=errno)
        self.fault = fault
        self.path = path
        self.vm = vm


class GuestLoginError(GuestFileError):
    errno = _errno.EACCES


class VMUnavailableError(GuestFileError):
    errno = _errno.EHOSTDOWN


class AuthenticationError(VSphereError):
    errno = _errno.EACCES


class TransferError(VSphereError):
    errno = _errno.EIO


class ProtocolError(VSphereError):
    errno = _errno.EIO


class ConnectionFailed(VSphereError):
    errno = _errno.ENOTCONN


class UnsupportedVCenter(VSphereError):
    errno = _errno.EOPNOTSUPP
