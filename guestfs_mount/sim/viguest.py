"""The VI/JSON GuestFileManager methods: request bodies in, guest file operations, VI data objects out."""

from __future__ import annotations

from .faults import SimFault
from .guestfs import Attributes, FileInfo, attributes_from
from .state import iso


def vi_attributes(info: FileInfo, windows: bool) -> dict:
    if windows:
        return {
            "_typeName": "GuestWindowsFileAttributes",
            "modificationTime": iso(info.mtime),
            "accessTime": iso(info.atime),
            "createTime": iso(info.ctime),
            "hidden": info.name.rsplit("\\", 1)[-1].startswith("."),
            "readOnly": not info.mode & 0o200,
        }
    attrs = {
        "_typeName": "GuestPosixFileAttributes",
        "modificationTime": iso(info.mtime),
        "accessTime": iso(info.atime),
        "ownerId": info.uid,
        "groupId": info.gid,
        "permissions": info.mode,  # reported in st_mode form
    }
    if info.symlink_target is not None:
        attrs["symlinkTarget"] = info.symlink_target
    return attrs


def parse_vi_attributes(fa: dict | None, windows: bool) -> Attributes:
    """GuestFileAttributes from a request; POSIX attributes on a Windows guest (or back) are InvalidArgument."""
    fa = fa or {}
    kind = fa.get("_typeName", "GuestFileAttributes")
    if (kind == "GuestPosixFileAttributes" and windows) or (kind == "GuestWindowsFileAttributes" and not windows):
        raise SimFault("InvalidArgument", f"{kind} does not fit this guest", invalidProperty="fileAttributes")
    return attributes_from(fa, VI_ATTRIBUTE_NAMES, int)


VI_ATTRIBUTE_NAMES = {
    "mode": "permissions",
    "uid": "ownerId",
    "gid": "groupId",
    "mtime": "modificationTime",
    "atime": "accessTime",
    "hidden": "hidden",
    "read_only": "readOnly",
}


def _list_files(h, sim, vm, fs, body):
    path = body.get("filePath")
    h.guest_path = path or ""
    index = int(body.get("index") or 0)
    max_results = body.get("maxResults")
    max_results = 50 if max_results is None else int(max_results)
    listed = fs.list_page(path, body.get("matchPattern"), index, max_results,
                          skip_unreadable=sim.settings.skip_unreadable)
    page = listed.entries
    result = {"_typeName": "GuestListFileInfo", "remaining": listed.remaining}
    if page:  # an unset array is omitted, as vCenter does
        result["files"] = [
            {
                "_typeName": "GuestFileInfo",
                "path": e.name,
                "type": e.type,
                "size": e.size,
                "attributes": vi_attributes(e, vm.windows),
            }
            for e in page
        ]
    return 200, result


def _from_guest(h, sim, vm, fs, body):
    path = body.get("guestFilePath")
    h.guest_path = path or ""
    host, info = fs.file_for_download(path)
    t = sim.transfers.create(vm=vm.name, direction="get", host_path=host, guest_path=path)
    return 200, {
        "_typeName": "FileTransferInformation",
        "attributes": vi_attributes(info, vm.windows),
        "size": info.size,
        "url": sim.transfer_url(t.id, t.token),
    }


def _to_guest(h, sim, vm, fs, body):
    path = body.get("guestFilePath")
    h.guest_path = path or ""
    attrs = parse_vi_attributes(body.get("fileAttributes"), vm.windows)
    size = body.get("fileSize")
    if not isinstance(size, int) or size < 0:
        raise SimFault("InvalidArgument", "fileSize must be a non-negative integer", invalidProperty="fileSize")
    overwrite = bool(body.get("overwrite"))
    host = fs.target_for_upload(path, overwrite)
    t = sim.transfers.create(
        vm=vm.name, direction="put", host_path=host, guest_path=path, size=size, attrs=attrs, overwrite=overwrite
    )
    return 200, sim.transfer_url(t.id, t.token)


def _mkdir(h, sim, vm, fs, body):
    h.guest_path = body.get("directoryPath") or ""
    fs.make_directory(body.get("directoryPath"), bool(body.get("createParentDirectories")))
    return 204, None


def _delete_file(h, sim, vm, fs, body):
    h.guest_path = body.get("filePath") or ""
    fs.delete_file(body.get("filePath"))
    return 204, None


def _delete_dir(h, sim, vm, fs, body):
    h.guest_path = body.get("directoryPath") or ""
    fs.delete_directory(body.get("directoryPath"), bool(body.get("recursive")))
    return 204, None


def _move_file(h, sim, vm, fs, body):
    h.guest_path = f"{body.get('srcFilePath')} -> {body.get('dstFilePath')}"
    fs.move_file(body.get("srcFilePath"), body.get("dstFilePath"), bool(body.get("overwrite")))
    return 204, None


def _move_dir(h, sim, vm, fs, body):
    h.guest_path = f"{body.get('srcDirectoryPath')} -> {body.get('dstDirectoryPath')}"
    fs.move_directory(body.get("srcDirectoryPath"), body.get("dstDirectoryPath"))
    return 204, None


def _chattr(h, sim, vm, fs, body):
    h.guest_path = body.get("guestFilePath") or ""
    fs.change_attributes(body.get("guestFilePath"), parse_vi_attributes(body.get("fileAttributes"), vm.windows))
    return 204, None


def _temp_file(h, sim, vm, fs, body):
    return 200, fs.create_temporary(body.get("prefix"), body.get("suffix"), body.get("directoryPath"), False)


def _temp_dir(h, sim, vm, fs, body):
    return 200, fs.create_temporary(body.get("prefix"), body.get("suffix"), body.get("directoryPath"), True)


GUEST_METHODS = {
    "ListFilesInGuest": _list_files,
    "InitiateFileTransferFromGuest": _from_guest,
    "InitiateFileTransferToGuest": _to_guest,
    "MakeDirectoryInGuest": _mkdir,
    "DeleteFileInGuest": _delete_file,
    "DeleteDirectoryInGuest": _delete_dir,
    "MoveFileInGuest": _move_file,
    "MoveDirectoryInGuest": _move_dir,
    "ChangeFileAttributesInGuest": _chattr,
    "CreateTemporaryFileInGuest": _temp_file,
    "CreateTemporaryDirectoryInGuest": _temp_dir,
}
