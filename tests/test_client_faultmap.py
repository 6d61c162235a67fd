"""Fault mapping without a server: VI fault classes and REST error bodies -> exception class and errno."""

from __future__ import annotations

import errno as E

import pytest

from guestfs_mount.vsphere.faultmap import is_retryable, rest_error, vi_fault_error
from guestfs_mount.vsphere.faults import (
    AuthenticationError,
    GuestFileError,
    GuestLoginError,
    VMUnavailableError,
)


@pytest.mark.parametrize("fault, expected", [
    ("FileNotFound", E.ENOENT), ("FileAlreadyExists", E.EEXIST), ("NotAFile", E.EISDIR),
    ("NotADirectory", E.ENOTDIR), ("DirectoryNotEmpty", E.ENOTEMPTY), ("FileNameTooLong", E.ENAMETOOLONG),
    ("FileTooLarge", E.EFBIG), ("NoDiskSpace", E.ENOSPC), ("CannotAccessFile", E.EACCES),
    ("FileNotWritable", E.EACCES), ("GuestPermissionDenied", E.EACCES), ("NoPermission", E.EACCES),
    ("FileLocked", E.EBUSY), ("GuestComponentsOutOfDate", E.EOPNOTSUPP),
    ("OperationNotSupportedByGuest", E.EOPNOTSUPP), ("OperationDisabledByGuest", E.EOPNOTSUPP),
    ("TooManyGuestLogons", E.EAGAIN), ("TaskInProgress", E.EBUSY), ("InvalidArgument", E.EINVAL),
    ("ManagedObjectNotFound", E.ENOENT),
    # not in the errno table: by parent class
    ("CannotDeleteFile", E.EIO), ("GuestRegistryFault", E.EIO), ("InvalidVmState", E.EIO),
    ("SomethingFromVSphere10", E.EIO),
])
def test_vi_faults_map_to_errno(fault, expected):
    error = vi_fault_error({"_typeName": fault, "faultMessage": [{"message": "why"}]}, path="/p", vm="vm-1")
    assert isinstance(error, GuestFileError)
    assert (error.errno, error.fault, error.path, error.vm) == (expected, fault, "/p", "vm-1")
    assert "why" in str(error)


def test_vi_special_classes():
    assert isinstance(vi_fault_error({"_typeName": "InvalidGuestLogin"}), GuestLoginError)
    assert vi_fault_error({"_typeName": "InvalidGuestLogin"}).errno == E.EACCES
    for name in ("InvalidPowerState", "GuestOperationsUnavailable"):
        error = vi_fault_error({"_typeName": name})
        assert isinstance(error, VMUnavailableError) and error.errno == E.EHOSTDOWN
    assert isinstance(vi_fault_error({"_typeName": "InvalidLogin"}), AuthenticationError)
    assert is_retryable(vi_fault_error({"_typeName": "TaskInProgress"}))
    assert not is_retryable(vi_fault_error({"_typeName": "FileNotFound"}))


@pytest.mark.parametrize("status, body, expected, cls", [
    (404, {"error_type": "NOT_FOUND", "data": {"reason": "FILE_NOT_FOUND"}}, E.ENOENT, GuestFileError),
    (400, {"error_type": "INVALID_ARGUMENT", "data": {"reason": "NOT_A_FILE"}}, E.EISDIR, GuestFileError),
    (400, {"error_type": "INVALID_ARGUMENT", "data": {"reason": "NOT_A_DIRECTORY"}}, E.ENOTDIR, GuestFileError),
    (400, {"error_type": "INVALID_ARGUMENT"}, E.EINVAL, GuestFileError),
    (400, {"error_type": "RESOURCE_IN_USE"}, E.ENOTEMPTY, GuestFileError),
    (400, {"error_type": "ALREADY_EXISTS"}, E.EEXIST, GuestFileError),
    (400, {"error_type": "UNSUPPORTED"}, E.EOPNOTSUPP, GuestFileError),
    (400, {"error_type": "NOT_ALLOWED_IN_CURRENT_STATE"}, E.EHOSTDOWN, VMUnavailableError),
    (401, {"error_type": "UNAUTHENTICATED"}, E.EACCES, GuestLoginError),
    (403, {"error_type": "UNAUTHORIZED"}, E.EACCES, GuestFileError),
    (500, {"error_type": "RESOURCE_BUSY"}, E.EBUSY, GuestFileError),
    (504, {"error_type": "TIMED_OUT"}, E.ETIMEDOUT, GuestFileError),
    (500, "<html>oops</html>", E.EIO, GuestFileError),  # not even a dict: still an error, never a crash
    (500, {"error_type": 7, "data": "x"}, E.EIO, GuestFileError),
])
def test_rest_errors_map_by_type_and_reason(status, body, expected, cls):
    error = rest_error(status, body, path="/p", vm="vm-1")
    assert type(error) is cls
    assert (error.errno, error.path, error.vm) == (expected, "/p", "vm-1")
