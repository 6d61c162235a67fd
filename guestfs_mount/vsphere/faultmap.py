"""Server faults -> the client's exceptions, with the errno a filesystem should return.

VI/JSON faults come as HTTP 500 with the fault object (`_typeName`, `faultMessage`, ...); a fault class we do
not know maps by its parent class. REST errors come as `{error_type, messages, data: {reason}}`; the file-level
`data.reason` is more precise than `error_type` and wins (API.md §1.3, §2.8).
"""

from __future__ import annotations

import errno as E
from typing import Any

from guestfs_mount.vsphere.faults import (
    AuthenticationError,
    GuestFileError,
    GuestLoginError,
    VMUnavailableError,
    VSphereError,
)

VI_ERRNO = {
    "FileNotFound": E.ENOENT,
    "FileAlreadyExists": E.EEXIST,
    "NotAFile": E.EISDIR,
    "NotADirectory": E.ENOTDIR,
    "DirectoryNotEmpty": E.ENOTEMPTY,
    "FileNameTooLong": E.ENAMETOOLONG,
    "FileTooLarge": E.EFBIG,
    "NoDiskSpace": E.ENOSPC,
    "CannotAccessFile": E.EACCES,
    "FileNotWritable": E.EACCES,
    "FileLocked": E.EBUSY,
    "GuestPermissionDenied": E.EACCES,
    "InvalidGuestLogin": E.EACCES,
    "GuestOperationsUnavailable": E.EHOSTDOWN,
    "GuestComponentsOutOfDate": E.EOPNOTSUPP,
    "OperationNotSupportedByGuest": E.EOPNOTSUPP,
    "OperationDisabledByGuest": E.EOPNOTSUPP,
    "TooManyGuestLogons": E.EAGAIN,
    "InvalidPowerState": E.EHOSTDOWN,
    "TaskInProgress": E.EBUSY,
    "InvalidArgument": E.EINVAL,
    "NoPermission": E.EACCES,
    "NotAuthenticated": E.EACCES,
    "ManagedObjectNotFound": E.ENOENT,
    "InvalidLogin": E.EACCES,
    # parents, for fault classes we do not know by name
    "FileFault": E.EIO,
    "GuestOperationsFault": E.EIO,
    "InvalidState": E.EIO,
    "SecurityError": E.EACCES,
    "RuntimeFault": E.EIO,
    "VimFault": E.EIO,
    "MethodFault": E.EIO,
}

# vim fault class -> parent class (from the VI type hierarchy), for the classes a guest file call can raise
VI_PARENT = {
    **dict.fromkeys(
        ["CannotAccessFile", "CannotCreateFile", "CannotDeleteFile", "DirectoryNotEmpty", "FileAlreadyExists",
         "FileLocked", "FileNameTooLong", "FileNotFound", "FileNotWritable", "FileTooLarge", "IncorrectFileType",
         "NetworkCopyFault", "NoDiskSpace", "NotADirectory", "NotAFile", "FileBackedPortNotSupported"],
        "FileFault"),
    **dict.fromkeys(
        ["GuestAuthenticationChallenge", "GuestComponentsOutOfDate", "GuestMultipleMappings",
         "GuestOperationsUnavailable", "GuestPermissionDenied", "GuestProcessNotFound", "GuestRegistryFault",
         "InvalidGuestLogin", "OperationDisabledByGuest", "OperationNotSupportedByGuest", "TooManyGuestLogons"],
        "GuestOperationsFault"),
    **dict.fromkeys(["InvalidPowerState", "InvalidHostState", "InvalidVmState", "InvalidDatastoreState"],
                    "InvalidState"),
    "NotAuthenticated": "NoPermission",
    "NoPermission": "SecurityError",
    "InvalidLogin": "VimFault",
    "FileFault": "VimFault",
    "GuestOperationsFault": "VimFault",
    "InvalidState": "VimFault",
    "TaskInProgress": "VimFault",
    "SecurityError": "RuntimeFault",
    "InvalidArgument": "RuntimeFault",
    "ManagedObjectNotFound": "RuntimeFault",
    "SystemError": "RuntimeFault",
    "InvalidRequest": "RuntimeFault",
    "RuntimeFault": "MethodFault",
    "VimFault": "MethodFault",
}

# worth another try after a pause: the guest or the VM is busy, or Tools are (re)starting
# InvalidState ("operation not allowed in the current state"): hostd's answer when guest operations on one VM
# overlap (govmomi #2193, community.vmware #917/#963); only the class itself, not its power/host subclasses
RETRYABLE_VI = {"TaskInProgress", "TooManyGuestLogons", "GuestOperationsUnavailable", "InvalidState"}
RETRYABLE_REST = {"RESOURCE_BUSY", "SERVICE_UNAVAILABLE"}

REST_REASON_ERRNO = {
    "FILE_NOT_FOUND": E.ENOENT,
    "NOT_A_FILE": E.EISDIR,
    "NOT_A_DIRECTORY": E.ENOTDIR,
    "PATH_TOO_LONG": E.ENAMETOOLONG,
    "FILE_TOO_LARGE": E.EFBIG,
    "NO_DISK_SPACE": E.ENOSPC,
    "DIRECTORY_NOT_EMPTY": E.ENOTEMPTY,
}
REST_TYPE_ERRNO = {
    "ALREADY_EXISTS": E.EEXIST,
    "INVALID_ARGUMENT": E.EINVAL,
    "RESOURCE_IN_USE": E.ENOTEMPTY,
    "NOT_ALLOWED_IN_CURRENT_STATE": E.EHOSTDOWN,
    "UNSUPPORTED": E.EOPNOTSUPP,
    "UNAUTHENTICATED": E.EACCES,
    "UNAUTHORIZED": E.EACCES,
    "NOT_FOUND": E.ENOENT,
    "RESOURCE_BUSY": E.EBUSY,
    "UNABLE_TO_ALLOCATE_RESOURCE": E.ENOSPC,
    "SERVICE_UNAVAILABLE": E.EHOSTDOWN,
    "TIMED_OUT": E.ETIMEDOUT,
    "CONCURRENT_CHANGE": E.EBUSY,
    "ERROR": E.EIO,
    "INTERNAL_SERVER_ERROR": E.EIO,
}


def vi_lineage(name: str) -> list[str]:
    """The fault class and its known ancestors, most specific first."""
    chain = [name]
    while chain[-1] in VI_PARENT and len(chain) < 10:
        chain.append(VI_PARENT[chain[-1]])
    return chain


def _message(body: dict) -> str:
    messages = body.get("faultMessage") or body.get("messages") or []
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict):
            text = m.get("message") or m.get("default_message")
            if isinstance(text, str) and text:
                return text
    text = body.get("faultstring")
    return text if isinstance(text, str) else ""


def missing_privileges(body: dict) -> list[str]:
    """The privileges a NoPermission fault names (`privilegeId`, and `missingPrivileges` since 7.0)."""
    names = [body["privilegeId"]] if isinstance(body.get("privilegeId"), str) else []
    for entry in body.get("missingPrivileges") or []:
        for p in (entry.get("privilegeIds") or []) if isinstance(entry, dict) else []:
            if isinstance(p, str) and p not in names:
                names.append(p)
    return names


def vi_fault_error(body: Any, *, path: str | None = None, vm: str | None = None) -> VSphereError:
    """A VI/JSON fault object -> exception. `body` has been checked to be a dict with a string `_typeName`."""
    name = body["_typeName"]
    lineage = vi_lineage(name)
    # a VM still "in another guest operation" after the retries is busy; InvalidState's subclasses go by the table
    errno = E.EBUSY if name == "InvalidState" else next((VI_ERRNO[c] for c in lineage if c in VI_ERRNO), E.EIO)
    detail = _message(body)
    privileges = missing_privileges(body) if name == "NoPermission" else []
    if privileges:
        detail = f"{detail.rstrip('.')}; the vCenter user lacks {', '.join(privileges)} on this VM".lstrip("; ")
    where = f" ({path})" if path else ""
    message = f"{name}{where}: {detail}" if detail else f"{name}{where}"
    if name == "InvalidLogin":
        return AuthenticationError(f"vCenter refused the login: {message}")
    cls = GuestFileError
    if name == "InvalidGuestLogin":
        cls = GuestLoginError
    elif name in ("InvalidPowerState", "GuestOperationsUnavailable"):
        cls = VMUnavailableError
    return cls(message, errno=errno, fault=name, path=path, vm=vm)


def rest_error(status: int, body: Any, *, path: str | None = None, vm: str | None = None) -> GuestFileError:
    """A REST error body -> exception; `fault` is `data.reason` when given, else `error_type`."""
    body = body if isinstance(body, dict) else {}
    error_type = body.get("error_type") if isinstance(body.get("error_type"), str) else f"HTTP {status}"
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    errno = REST_REASON_ERRNO.get(reason) or REST_TYPE_ERRNO.get(error_type, E.EIO)
    detail = _message(body)
    where = f" ({path})" if path else ""
    label = f"{error_type}/{reason}" if reason else error_type
    message = f"{label}{where}: {detail}" if detail else f"{label}{where}"
    cls = GuestFileError
    if error_type == "UNAUTHENTICATED":
        cls = GuestLoginError
    elif error_type in ("NOT_ALLOWED_IN_CURRENT_STATE", "SERVICE_UNAVAILABLE"):
        cls = VMUnavailableError
    return cls(message, errno=errno, fault=reason or error_type, path=path, vm=vm)


def is_retryable(error: VSphereError) -> bool:
    fault = getattr(error, "fault", None)
    return fault in RETRYABLE_VI or fault in RETRYABLE_REST
