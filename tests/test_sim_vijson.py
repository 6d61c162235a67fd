"""The simulator's VI/JSON dialect over real sockets: bootstrap, session, inventory, every GuestFileManager method."""

import os
import stat

import httpx
import pytest

from tests.helpers.simulator import ViCaller


@pytest.fixture
def vi(sim):
    caller = ViCaller(sim)
    yield caller
    caller.close()


def unbox(v):
    if isinstance(v, dict) and set(v) == {"_typeName", "_value"}:
        return v["_value"]
    return v


def local_url(sim, url):
    assert url.startswith(sim.url.split("://")[0] + "://*:")
    return url.replace("*", "127.0.0.1", 1)


def test_service_content_without_session_by_get_and_post(sim):
    vi = ViCaller(sim, login=False)
    got = vi.get("ServiceInstance", "ServiceInstance", "content")
    assert got.status_code == 200
    assert got.json()["guestOperationsManager"]["value"] == "guestOperationsManager"
    posted = vi.post("ServiceInstance", "ServiceInstance", "RetrieveServiceContent")
    assert posted.json()["_typeName"] == "ServiceContent"
    vi.close()


@pytest.mark.parametrize("release", ["8.0.0.1", "7.0.3.0", "8.0", "latest"])
def test_old_or_malformed_release_is_404(sim, release):
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        r = http.get(f"/sdk/vim25/{release}/ServiceInstance/ServiceInstance/content")
    assert r.status_code == 404


def test_newer_release_is_accepted(sim):
    vi = ViCaller(sim, release="9.1.0.0")
    assert vi.get("GuestOperationsManager", "guestOperationsManager", "fileManager").json()["value"] == "guestOperationsFileManager"
    vi.close()


def test_login_bad_password_is_invalid_login(sim):
    vi = ViCaller(sim, login=False)
    r = vi.post("SessionManager", "SessionManager", "Login", {"userName": sim.vc_user, "password": "wrong"})
    assert r.status_code == 500
    assert r.json()["_typeName"] == "InvalidLogin"
    vi.close()


def test_no_session_is_not_authenticated(sim):
    vi = ViCaller(sim, login=False)
    r = vi.get("GuestOperationsManager", "guestOperationsManager", "fileManager")
    assert r.status_code == 500 and r.json()["_typeName"] == "NotAuthenticated"
    vi.close()


def test_current_session_logout_and_expiry(sim, vi):
    vi.vm_id("alpha")
    r = vi.get("SessionManager", "SessionManager", "currentSession")
    assert r.status_code == 200 and r.json()["_typeName"] == "UserSession"
    sim.expire_sessions()
    assert vi.get("SessionManager", "SessionManager", "currentSession").status_code == 204
    r = vi.guest("ListFilesInGuest", "alpha", filePath="/")
    assert r.json()["_typeName"] == "NotAuthenticated"
    vi2 = ViCaller(sim)
    assert vi2.post("SessionManager", "SessionManager", "Logout").status_code == 204
    assert vi2.get("GuestOperationsManager", "guestOperationsManager", "fileManager").json()["_typeName"] == "NotAuthenticated"
    vi2.close()


def container_view(vi):
    r = vi.post(
        "ViewManager",
        "ViewManager",
        "CreateContainerView",
        {"container": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "type": ["VirtualMachine"], "recursive": True},
    )
    return r.json()


VM_PATHS = ["name", "runtime.powerState", "runtime.host", "guest.guestFamily", "guest.guestOperationsReady", "config.template"]


def retrieve(vi, view, max_objects=None, paths=VM_PATHS):
    options = {"_typeName": "RetrieveOptions"}
    if max_objects:
        options["maxObjects"] = max_objects
    spec = {
        "_typeName": "PropertyFilterSpec",
        "propSet": [{"_typeName": "PropertySpec", "type": "VirtualMachine", "all": False, "pathSet": paths}],
        "objectSet": [
            {
                "_typeName": "ObjectSpec",
                "obj": view,
                "skip": True,
                "selectSet": [{"_typeName": "TraversalSpec", "name": "traverseView", "type": "ContainerView", "path": "view", "skip": False}],
            }
        ],
    }
    return vi.post("PropertyCollector", "propertyCollector", "RetrievePropertiesEx", {"specSet": [spec], "options": options})


def props(obj):
    return {p["name"]: unbox(p["val"]) for p in obj["propSet"]}


def test_container_view_lists_vms_with_properties_and_pages(sim, vi):
    sim.vm_dir("gamma")
    (sim.root / ".hidden").mkdir()
    view = container_view(vi)
    first = retrieve(vi, view, max_objects=2).json()
    assert len(first["objects"]) == 2 and "token" in first
    rest = vi.post("PropertyCollector", "propertyCollector", "ContinueRetrievePropertiesEx", {"token": first["token"]}).json()
    assert "token" not in rest
    objs = first["objects"] + rest["objects"]
    by_name = {props(o)["name"]: (o, props(o)) for o in objs}
    assert sorted(by_name) == ["alpha", "beta", "gamma"]
    obj, p = by_name["alpha"]
    assert p["runtime.powerState"] == "poweredOn"
    assert p["guest.guestFamily"] == "linuxGuest"
    assert p["guest.guestOperationsReady"] is True
    assert p["config.template"] is False
    assert p["runtime.host"]["type"] == "HostSystem"
    assert obj["obj"]["value"] == vi.vm_id("alpha")
    # ids stay stable, and a VM made after start shows up at the next listing
    sim.vm_dir("delta")
    again = {props(o)["name"]: o["obj"]["value"] for o in retrieve(vi, view).json()["objects"]}
    assert again["alpha"] == obj["obj"]["value"] and "delta" in again


def test_power_and_tools_state_show_in_properties(sim, vi):
    sim.power("beta", "poweredOff")
    sim.tools("alpha", False)
    got = {props(o)["name"]: props(o) for o in retrieve(vi, container_view(vi)).json()["objects"]}
    assert got["beta"]["runtime.powerState"] == "poweredOff"
    assert got["beta"]["guest.guestOperationsReady"] is False
    assert got["alpha"]["guest.guestOperationsReady"] is False


def test_find_child_and_missing_vm(sim, vi):
    r = vi.post("SearchIndex", "SearchIndex", "FindChild", {"entity": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-v3"}, "name": "beta"})
    assert r.json()["value"] == vi.vm_id("beta")
    r = vi.post("SearchIndex", "SearchIndex", "FindByInventoryPath", {"inventoryPath": "Datacenter/vm/nope"})
    assert r.status_code == 204


def test_list_files_directory_dot_entries_first_and_attributes(sim, vi):
    d = sim.vm_dir("alpha") / "etc"
    d.mkdir()
    (d / "hosts").write_text("127.0.0.1 localhost\n")
    os.utime(d / "hosts", (1_700_000_000.7, 1_600_000_000.2))
    os.symlink("hosts", d / "link")
    r = vi.guest("ListFilesInGuest", "alpha", filePath="/etc")
    assert r.status_code == 200
    body = r.json()
    assert body["_typeName"] == "GuestListFileInfo" and body["remaining"] == 0
    names = [f["path"] for f in body["files"]]
    assert names[:2] == [".", ".."] and sorted(names[2:]) == ["hosts", "link"]
    files = {f["path"]: f for f in body["files"]}
    hosts = files["hosts"]
    assert hosts["type"] == "file" and hosts["size"] == 20
    a = hosts["attributes"]
    assert a["_typeName"] == "GuestPosixFileAttributes"
    assert a["permissions"] == os.stat(d / "hosts").st_mode and stat.S_ISREG(a["permissions"])
    assert a["modificationTime"] == "2020-09-13T12:26:40Z"
    assert a["accessTime"] == "2023-11-14T22:13:20Z"
    assert a["ownerId"] == os.getuid()
    link = files["link"]
    assert link["type"] == "symlink" and link["size"] == 0 and link["attributes"]["symlinkTarget"] == "hosts"
    assert files["."]["type"] == "directory"


def test_list_files_paging_and_pattern(sim, vi):
    d = sim.vm_dir("alpha") / "many"
    d.mkdir()
    for i in range(7):
        (d / f"f{i}").write_text("x")
    (d / "other").write_text("y")
    seen = []
    index = 0
    while True:
        body = vi.guest("ListFilesInGuest", "alpha", filePath="/many", index=index, maxResults=3).json()
        page = [f["path"] for f in body.get("files", [])]
        seen += page
        index += len(page)
        assert body["remaining"] == 10 - index
        if not body["remaining"]:
            break
    assert seen[:2] == [".", ".."] and len(seen) == 10 and len(set(seen)) == 10
    body = vi.guest("ListFilesInGuest", "alpha", filePath="/many", matchPattern="^f[0-3]$", maxResults=0).json()
    assert "files" not in body and body["remaining"] == 4
    bad = vi.guest("ListFilesInGuest", "alpha", filePath="/many", matchPattern="(")
    assert bad.status_code == 500 and bad.json()["_typeName"] == "InvalidArgument"


def test_list_files_on_file_and_on_symlink_to_dir_gives_one_entry_with_full_path(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "d").mkdir()
    (root / "d" / "f").write_text("abc")
    os.symlink("/d", root / "dl")
    one = vi.guest("ListFilesInGuest", "alpha", filePath="/d/f").json()["files"]
    assert [(f["path"], f["type"], f["size"]) for f in one] == [("/d/f", "file", 3)]
    link = vi.guest("ListFilesInGuest", "alpha", filePath="/dl").json()["files"]
    assert [(f["path"], f["type"]) for f in link] == [("/dl", "symlink")]
    assert link[0]["attributes"]["symlinkTarget"] == "/d"


def test_list_files_missing_is_file_not_found_with_file(sim, vi):
    r = vi.guest("ListFilesInGuest", "alpha", filePath="/nope")
    assert r.status_code == 500
    body = r.json()
    assert body["_typeName"] == "FileNotFound" and body["file"] == "/nope" and body["faultMessage"]


def test_download_single_use_and_attributes(sim, vi):
    (sim.vm_dir("alpha") / "data.bin").write_bytes(b"0123456789" * 1000)
    r = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/data.bin")
    info = r.json()
    assert info["_typeName"] == "FileTransferInformation" and info["size"] == 10000
    assert info["attributes"]["_typeName"] == "GuestPosixFileAttributes"
    url = local_url(sim, info["url"])
    got = httpx.get(url, timeout=10)
    assert got.status_code == 200 and got.content == b"0123456789" * 1000
    assert got.headers["content-length"] == "10000"
    assert httpx.get(url, timeout=10).status_code == 404


def test_download_of_directory_and_symlink_refused(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "dir").mkdir()
    os.symlink("dir", root / "ln")
    assert vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/dir").json()["_typeName"] == "NotAFile"
    assert vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/ln").json()["_typeName"] == "InvalidArgument"


def upload(vi, sim, path, data, attrs=None, overwrite=True, vm="alpha"):
    r = vi.guest(
        "InitiateFileTransferToGuest",
        vm,
        guestFilePath=path,
        fileAttributes=attrs or {"_typeName": "GuestFileAttributes"},
        fileSize=len(data),
        overwrite=overwrite,
    )
    assert r.status_code == 200, r.text
    return local_url(sim, r.json())


def test_upload_applies_attributes_and_is_single_use(sim, vi):
    attrs = {"_typeName": "GuestPosixFileAttributes", "permissions": 0o600, "ownerId": 1234, "groupId": 4321, "modificationTime": "2024-06-01T12:00:00Z"}
    url = upload(vi, sim, "/new.txt", b"hello world!", attrs)
    r = httpx.put(url, content=b"hello world!", timeout=10)
    assert r.status_code == 200
    p = sim.vm_dir("alpha") / "new.txt"
    st = p.stat()
    assert p.read_bytes() == b"hello world!"
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (1234, 4321)
    assert int(st.st_mtime) == 1717243200
    assert httpx.put(url, content=b"hello world!", timeout=10).status_code == 404
    assert [f for f in os.listdir(p.parent) if f.startswith(".guestfs-sim")] == []


def test_upload_default_mode_and_overwrite_false(sim, vi):
    url = upload(vi, sim, "/plain", b"x")
    assert httpx.put(url, content=b"x", timeout=10).status_code == 200
    assert stat.S_IMODE((sim.vm_dir("alpha") / "plain").stat().st_mode) == 0o644
    r = vi.guest("InitiateFileTransferToGuest", "alpha", guestFilePath="/plain", fileAttributes={"_typeName": "GuestFileAttributes"}, fileSize=1, overwrite=False)
    assert r.json()["_typeName"] == "FileAlreadyExists"
    r = vi.guest("InitiateFileTransferToGuest", "alpha", guestFilePath="/nodir/x", fileAttributes={"_typeName": "GuestFileAttributes"}, fileSize=1, overwrite=True)
    assert r.json()["_typeName"] == "FileNotFound"
    (sim.vm_dir("alpha") / "adir").mkdir()
    r = vi.guest("InitiateFileTransferToGuest", "alpha", guestFilePath="/adir", fileAttributes={"_typeName": "GuestFileAttributes"}, fileSize=1, overwrite=True)
    assert r.json()["_typeName"] == "NotAFile"


@pytest.mark.parametrize("send", ["short", "long", "chunked"])
def test_upload_wrong_length_is_rejected_and_nothing_written(sim, vi, send):
    target = sim.vm_dir("alpha") / "exact"
    target.write_bytes(b"old")
    url = upload(vi, sim, "/exact", b"0123456789")
    if send == "chunked":
        r = httpx.put(url, content=iter([b"01234", b"56789"]), timeout=10)
    else:
        data = b"01234" if send == "short" else b"0123456789abc"
        r = httpx.put(url, content=data, timeout=10)
    assert r.status_code >= 400
    assert target.read_bytes() == b"old"
    assert [f for f in os.listdir(target.parent) if f.startswith(".guestfs-sim")] == []
    # the URL was not spent by the failed request
    assert httpx.put(url, content=b"0123456789", timeout=10).status_code == 200
    assert target.read_bytes() == b"0123456789"


def test_zero_byte_upload_and_download(sim, vi):
    url = upload(vi, sim, "/empty", b"")
    assert httpx.put(url, content=b"", timeout=10).status_code == 200
    info = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/empty").json()
    assert info["size"] == 0
    assert httpx.get(local_url(sim, info["url"]), timeout=10).content == b""


def test_make_directory_0700_parents_and_exists(sim, vi):
    assert vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/a", createParentDirectories=False).status_code == 204
    assert stat.S_IMODE((sim.vm_dir("alpha") / "a").stat().st_mode) == 0o700
    r = vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/x/y/z", createParentDirectories=False)
    assert r.json()["_typeName"] == "FileNotFound"
    assert vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/x/y/z", createParentDirectories=True).status_code == 204
    assert (sim.vm_dir("alpha") / "x" / "y" / "z").is_dir()
    r = vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/a", createParentDirectories=True)
    assert r.json()["_typeName"] == "FileAlreadyExists"


def test_delete_file_and_directory(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_text("1")
    os.symlink("d", root / "dl")
    assert vi.guest("DeleteFileInGuest", "alpha", filePath="/d").json()["_typeName"] == "NotAFile"
    assert vi.guest("DeleteFileInGuest", "alpha", filePath="/dl").status_code == 204
    assert (root / "d").is_dir() and not os.path.lexists(root / "dl")
    assert vi.guest("DeleteFileInGuest", "alpha", filePath="/nope").json()["_typeName"] == "FileNotFound"
    assert vi.guest("DeleteDirectoryInGuest", "alpha", directoryPath="/d/f", recursive=False).json()["_typeName"] == "NotADirectory"
    assert vi.guest("DeleteDirectoryInGuest", "alpha", directoryPath="/d", recursive=False).json()["_typeName"] == "DirectoryNotEmpty"
    assert vi.guest("DeleteDirectoryInGuest", "alpha", directoryPath="/d", recursive=True).status_code == 204
    assert not (root / "d").exists()


def test_move_file_and_directory(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "a").write_text("A")
    (root / "b").write_text("B")
    (root / "dir").mkdir()
    assert vi.guest("MoveFileInGuest", "alpha", srcFilePath="/a", dstFilePath="/b", overwrite=False).json()["_typeName"] == "FileAlreadyExists"
    assert vi.guest("MoveFileInGuest", "alpha", srcFilePath="/a", dstFilePath="/dir", overwrite=True).json()["_typeName"] == "FileAlreadyExists"
    assert vi.guest("MoveFileInGuest", "alpha", srcFilePath="/dir", dstFilePath="/c", overwrite=True).json()["_typeName"] == "NotAFile"
    assert vi.guest("MoveFileInGuest", "alpha", srcFilePath="/a", dstFilePath="/b", overwrite=True).status_code == 204
    assert (root / "b").read_text() == "A" and not (root / "a").exists()
    assert vi.guest("MoveDirectoryInGuest", "alpha", srcDirectoryPath="/b", dstDirectoryPath="/e").json()["_typeName"] == "NotADirectory"
    (root / "dir2").mkdir()
    assert vi.guest("MoveDirectoryInGuest", "alpha", srcDirectoryPath="/dir", dstDirectoryPath="/dir2").json()["_typeName"] == "FileAlreadyExists"
    assert vi.guest("MoveDirectoryInGuest", "alpha", srcDirectoryPath="/dir", dstDirectoryPath="/dir3").status_code == 204
    assert (root / "dir3").is_dir()


def test_change_file_attributes(sim, vi):
    p = sim.vm_dir("alpha") / "f"
    p.write_text("x")
    os.chmod(p, 0o644)
    attrs = {"_typeName": "GuestPosixFileAttributes", "permissions": 0o751, "ownerId": 77, "accessTime": "2021-01-01T00:00:00Z"}
    assert vi.guest("ChangeFileAttributesInGuest", "alpha", guestFilePath="/f", fileAttributes=attrs).status_code == 204
    st = p.stat()
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_uid == 77 and st.st_gid == os.getgid()
    assert int(st.st_atime) == 1609459200
    r = vi.guest("ChangeFileAttributesInGuest", "alpha", guestFilePath="/f", fileAttributes={"_typeName": "GuestWindowsFileAttributes", "hidden": True})
    assert r.json()["_typeName"] == "InvalidArgument"


def test_create_temporary_file_and_directory(sim, vi):
    (sim.vm_dir("alpha") / "tmp").mkdir()
    f = vi.guest("CreateTemporaryFileInGuest", "alpha", prefix="fuse-", suffix=".tmp", directoryPath="/tmp").json()
    assert f.startswith("/tmp/fuse-") and f.endswith(".tmp")
    assert (sim.vm_dir("alpha") / f.lstrip("/")).is_file()
    d = vi.guest("CreateTemporaryDirectoryInGuest", "alpha", prefix="p", suffix="s").json()
    assert d.startswith("/tmp/p") and (sim.vm_dir("alpha") / d.lstrip("/")).is_dir()


def test_bad_guest_password_on_every_guest_op(sim, vi):
    bad = {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": "root", "password": "nope"}
    r = vi.guest("ListFilesInGuest", "alpha", auth=bad, filePath="/")
    assert r.status_code == 500 and r.json()["_typeName"] == "InvalidGuestLogin"
    r = vi.guest("MakeDirectoryInGuest", "alpha", auth=bad, directoryPath="/q", createParentDirectories=False)
    assert r.json()["_typeName"] == "InvalidGuestLogin" and not (sim.vm_dir("alpha") / "q").exists()


def test_unknown_vm_is_managed_object_not_found(sim, vi):
    body = {
        "vm": {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": "vm-999"},
        "auth": {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": "root", "password": "vmware"},
        "filePath": "/",
    }
    r = vi.post("GuestFileManager", "guestOperationsFileManager", "ListFilesInGuest", body)
    assert r.status_code == 500 and r.json()["_typeName"] == "ManagedObjectNotFound"


def test_path_cannot_climb_out_of_the_guest(sim, vi):
    (sim.root / "secret").write_text("host file")
    r = vi.guest("ListFilesInGuest", "alpha", filePath="/../../secret")
    assert r.json()["_typeName"] == "FileNotFound"


def test_vm_property_gets_host_view_cancel_and_destroy(sim, vi):
    vm = vi.vm_id("alpha")
    assert vi.get("VirtualMachine", vm, "name").json() == "alpha"
    runtime = vi.get("VirtualMachine", vm, "runtime").json()
    assert runtime["_typeName"] == "VirtualMachineRuntimeInfo" and runtime["powerState"] == "poweredOn"
    assert vi.get("VirtualMachine", "vm-999", "name").json()["_typeName"] == "ManagedObjectNotFound"
    view = vi.post(
        "ViewManager",
        "ViewManager",
        "CreateContainerView",
        {"container": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "type": ["HostSystem"], "recursive": True},
    ).json()
    hosts = retrieve(vi, view, paths=None)
    assert hosts.json()["objects"] == []  # the propSet asks for VirtualMachine only
    page = retrieve(vi, container_view(vi), max_objects=1).json()
    assert vi.post("PropertyCollector", "propertyCollector", "CancelRetrievePropertiesEx", {"token": page["token"]}).status_code == 204
    again = vi.post("PropertyCollector", "propertyCollector", "ContinueRetrievePropertiesEx", {"token": page["token"]})
    assert again.status_code == 500 and again.json()["_typeName"] == "InvalidArgument"
    assert vi.post("ContainerView", view["value"], "DestroyView").status_code == 204
    gone = retrieve(vi, view)
    assert gone.status_code == 500 and gone.json()["_typeName"] == "ManagedObjectNotFound"


def test_directory_listing_sees_changes_between_calls(sim, vi):
    root = sim.vm_dir("alpha")
    assert [f["path"] for f in vi.guest("ListFilesInGuest", "alpha", filePath="/").json()["files"]] == [".", ".."]
    (root / "new").write_text("n")
    names = [f["path"] for f in vi.guest("ListFilesInGuest", "alpha", filePath="/").json()["files"]]
    assert names == [".", "..", "new"]
