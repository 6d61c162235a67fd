"""Simulator faults: one exception type carrying a VI fault name, rendered as a VI/JSON body or a REST error."""

from __future__ import annotations

import errno

# FileFault subclasses carry a `file` field in the VI body (API.md §1.3).
FILE_FAULTS = {
    "FileFault",
    "FileNotFound",
    "FileAlreadyExists",
    "NotAFile",
    "NotADirectory",
    "DirectoryNotEmpty",
    "FileNameTooLong",
    "FileTooLarge",
    "NoDiskSpace",
    "CannotAccessFile",
    "FileNotWritable",
    "FileLocked",
}

# VI fault name -> (HTTP status, REST error_type, data.reason or None); API.md §2.8.
REST_ERRORS = {
    "FileNotFound": (404, "NOT_FOUND", "FILE_NOT_FOUND"),
    "FileAlreadyExists": (400, "ALREADY_EXISTS", None),
    "NotAFile": (400, "INVALID_ARGUMENT", "NOT_A_FILE"),
    "NotADirectory": (400, "INVALID_ARGUMENT", "NOT_A_DIRECTORY"),
    "DirectoryNotEmpty": (400, "RESOURCE_IN_USE", "DIRECTORY_NOT_EMPTY"),
    "FileNameTooLong": (400, "INVALID_ARGUMENT", "PATH_TOO_LONG"),
    "FileTooLarge": (400, "INVALID_ARGUMENT", "FILE_TOO_LARGE"),
    "NoDiskSpace": (500, "UNABLE_TO_ALLOCATE_RESOURCE", "NO_DISK_SPACE"),
    "CannotAccessFile": (403, "UNAUTHORIZED", None),
    "FileNotWritable": (403, "UNAUTHORIZED", None),
    "GuestPermissionDenied": (403, "UNAUTHORIZED", None),
    "NoPermission": (403, "UNAUTHORIZED", None),
    "FileLocked": (500, "RESOURCE_BUSY", None),
    "InvalidGuestLogin": (401, "UNAUTHENTICATED", None),
    "NotAuthenticated": (401, "UNAUTHENTICATED", None),
    "InvalidLogin": (401, "UNAUTHENTICATED", None),
    "InvalidPowerState": (400, "NOT_ALLOWED_IN_CURRENT_STATE", None),
    "InvalidState": (400, "NOT_ALLOWED_IN_CURRENT_STATE", None),
    "GuestOperationsUnavailable": (503, "SERVICE_UNAVAILABLE", None),
    "TaskInProgress": (500, "RESOURCE_BUSY", None),
    "TooManyGuestLogons": (500, "RESOURCE_BUSY", None),
    "InvalidArgument": (400, "INVALID_ARGUMENT", None),
    "ManagedObjectNotFound": (404, "NOT_FOUND", None),
    "OperationNotSupportedByGuest": (400, "UNSUPPORTED", None),
    "OperationDisabledByGuest": (400, "UNSUPPORTED", None),
    "GuestComponentsOutOfDate": (400, "UNSUPPORTED", None),
}

_ERRNO_FAULTS = {
    errno.ENOENT: "FileNotFound",
    errno.EEXIST: "FileAlreadyExists",
    errno.EISDIR: "NotAFile",
    errno.ENOTDIR: "NotADirectory",
    errno.ENOTEMPTY: "DirectoryNotEmpty",
    errno.ENAMETOOLONG: "FileNameTooLong",
    errno.EFBIG: "FileTooLarge",
    errno.ENOSPC: "NoDiskSpace",
    errno.EDQUOT: "NoDiskSpace",
    errno.EACCES: "GuestPermissionDenied",
    errno.EPERM: "GuestPermissionDenied",
    errno.EBUSY: "FileLocked",
}


class SimFault(Exception):
    """A failure of a simulated call, named by its VI fault class; `fields` are the fault's own fields."""

    def __init__(self, name: str, message: str = "", /, *, file: str | None = None, **fields):
        # positional-only: a fault's own fields may be called `name` (InvalidProperty) or `message`
        super().__init__(message or name)
        self.name = name
        self.message = message or name
        self.file = file
        self.fields = fields

    def vi_body(self) -> dict:
        body = {
            "_typeName": self.name,
            "faultMessage": [
                {"_typeName": "LocalizableMessage", "key": f"sim.fault.{self.name}", "arg": [], "message": self.message}
            ],
        }
        if self.name in FILE_FAULTS:
            body["file"] = self.file or ""
        body.update(self.fields)
        return body

    def rest_error(self) -> tuple[int, dict]:
        status, error_type, reason = REST_ERRORS.get(self.name, (500, "ERROR", None))
        body = {
            "error_type": error_type,
            "messages": [
                {"id": f"com.vmware.sim.{self.name}", "default_message": self.message, "args": []}
            ],
        }
        if reason or self.file is not None:
            body["data"] = {"file_path": self.file or ""}
            if reason:
                body["data"]["reason"] = reason
        return status, body


def from_oserror(err: OSError, guest_path: str) -> SimFault:
    """The fault a guest agent reports for an OS error on `guest_path` (unknown errnos: a generic FileFault)."""
    name = _ERRNO_FAULTS.get(err.errno, "FileFault")
    return SimFault(name, f"{name}: {guest_path}: {err.strerror}", file=guest_path)
