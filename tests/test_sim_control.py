"""The simulator's /_sim controls: planned faults in both dialects, power, Tools, stats, latency."""

import shutil
import time

import httpx
import pytest

from tests.helpers.simulator import RestCaller, ViCaller, running_simulator

# (VI method, the extra VI body, the REST (sub, action, body) doing the same) for each guest operation
OPERATIONS = {
    "ListFilesInGuest": ({"filePath": "/"}, ("/files", "list", {"path": "/"})),
    "InitiateFileTransferFromGuest": ({"guestFilePath": "/f"}, ("", "create", {"spec": {"path": "/f"}})),
    "InitiateFileTransferToGuest": (
        {"guestFilePath": "/g", "fileAttributes": {"_typeName": "GuestFileAttributes"}, "fileSize": 1, "overwrite": True},
        ("", "create", {"spec": {"path": "/g", "attributes": {"size": 1, "overwrite": True}}}),
    ),
    "MakeDirectoryInGuest": ({"directoryPath": "/nd", "createParentDirectories": False}, ("/directories", "create", {"path": "/nd"})),
    "DeleteFileInGuest": ({"filePath": "/f"}, None),
    "DeleteDirectoryInGuest": ({"directoryPath": "/d", "recursive": False}, ("/directories", "delete", {"path": "/d"})),
    "MoveFileInGuest": ({"srcFilePath": "/f", "dstFilePath": "/f2", "overwrite": False}, ("/files", "move", {"path": "/f", "new_path": "/f2"})),
    "MoveDirectoryInGuest": ({"srcDirectoryPath": "/d", "dstDirectoryPath": "/d2"}, ("/directories", "move", {"path": "/d", "new_path": "/d2"})),
    "ChangeFileAttributesInGuest": (
        {"guestFilePath": "/f", "fileAttributes": {"_typeName": "GuestPosixFileAttributes", "permissions": 0o600}},
        ("/files", "update", {"path": "/f", "file_attributes": {"posix": {"permissions": "600"}}}),
    ),
    "CreateTemporaryFileInGuest": ({"prefix": "a", "suffix": "b", "directoryPath": "/d"}, ("/files", "createTemporary", {"prefix": "a", "suffix": "b", "parent_path": "/d"})),
    "CreateTemporaryDirectoryInGuest": ({"prefix": "a", "suffix": "b", "directoryPath": "/d"}, ("/directories", "createTemporary", {"prefix": "a", "suffix": "b", "parent_path": "/d"})),
}

# VI fault -> (REST status, error_type, data.reason or None)
FAULTS = {
    "FileNotFound": (404, "NOT_FOUND", "FILE_NOT_FOUND"),
    "FileAlreadyExists": (400, "ALREADY_EXISTS", None),
    "NotAFile": (400, "INVALID_ARGUMENT", "NOT_A_FILE"),
    "NotADirectory": (400, "INVALID_ARGUMENT", "NOT_A_DIRECTORY"),
    "DirectoryNotEmpty": (400, "RESOURCE_IN_USE", "DIRECTORY_NOT_EMPTY"),
    "FileNameTooLong": (400, "INVALID_ARGUMENT", "PATH_TOO_LONG"),
    "NoDiskSpace": (500, "UNABLE_TO_ALLOCATE_RESOURCE", "NO_DISK_SPACE"),
    "CannotAccessFile": (403, "UNAUTHORIZED", None),
    "GuestPermissionDenied": (403, "UNAUTHORIZED", None),
    "InvalidGuestLogin": (401, "UNAUTHENTICATED", None),
    "InvalidPowerState": (400, "NOT_ALLOWED_IN_CURRENT_STATE", None),
    "GuestOperationsUnavailable": (503, "SERVICE_UNAVAILABLE", None),
    "TaskInProgress": (500, "RESOURCE_BUSY", None),
    "TooManyGuestLogons": (500, "RESOURCE_BUSY", None),
    "InvalidArgument": (400, "INVALID_ARGUMENT", None),
    "ManagedObjectNotFound": (404, "NOT_FOUND", None),
    "FileFault": (500, "ERROR", None),
    "SystemError": (500, "ERROR", None),
}


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory):
    """One simulator for the many parametrized cases below (each case resets what it touches)."""
    tmp = tmp_path_factory.mktemp("sim")
    for name in ("alpha", "beta"):
        (tmp / "vms" / name).mkdir(parents=True)
    with running_simulator(tmp / "vms", log_path=tmp / "sim.log") as simulator:
        yield simulator


@pytest.fixture
def fresh(shared_sim):
    """The shared simulator with alpha's tree reset to `/f` and `/d`, both VMs on, no planned faults left."""
    root = shared_sim.vm_dir("alpha")
    shutil.rmtree(root)
    root.mkdir()
    (root / "f").write_text("x")
    (root / "d").mkdir()
    for vm in ("alpha", "beta"):
        shared_sim.power(vm, "poweredOn")
        shared_sim.tools(vm, True)
    vi, rest = ViCaller(shared_sim), RestCaller(shared_sim)
    vi.vm_id("alpha"), vi.vm_id("beta"), rest.vm_id("alpha")
    yield vi, rest
    vi.close()
    rest.close()


@pytest.fixture
def callers(sim):
    root = sim.vm_dir("alpha")
    (root / "f").write_text("x")
    (root / "d").mkdir()
    vi, rest = ViCaller(sim), RestCaller(sim)
    vi.vm_id("alpha"), vi.vm_id("beta"), rest.vm_id("alpha")
    yield vi, rest
    vi.close()
    rest.close()


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_planned_fault_hits_each_vi_operation_once(shared_sim, fresh, operation):
    sim, (vi, _) = shared_sim, fresh
    body, _ = OPERATIONS[operation]
    sim.fault(operation, "TaskInProgress", times=1)
    r = vi.guest(operation, "alpha", **body)
    assert r.status_code == 500 and r.json()["_typeName"] == "TaskInProgress"
    assert vi.guest(operation, "alpha", **body).status_code in (200, 204)


@pytest.mark.parametrize("operation", sorted(op for op, (_, rest) in OPERATIONS.items() if rest))
def test_planned_fault_hits_each_rest_operation(shared_sim, fresh, operation):
    sim, (_, rest) = shared_sim, fresh
    sub, action, body = OPERATIONS[operation][1]
    sim.fault(operation, "FileNotFound")
    r = rest.fs("alpha", sub, action, **body)
    assert r.status_code == 404 and r.json()["data"]["reason"] == "FILE_NOT_FOUND"
    assert rest.fs("alpha", sub, action, **body).status_code in (200, 201, 204)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_in_both_dialects(shared_sim, fresh, fault):
    sim, (vi, rest) = shared_sim, fresh
    sim.fault("ListFilesInGuest", fault, times=2)
    r = vi.guest("ListFilesInGuest", "alpha", filePath="/")
    assert r.status_code == 500
    body = r.json()
    assert body["_typeName"] == fault and body["faultMessage"][0]["message"]
    status, error_type, reason = FAULTS[fault]
    r = rest.fs("alpha", "/files", "list", path="/")
    assert r.status_code == status
    assert r.json()["error_type"] == error_type
    assert r.json().get("data", {}).get("reason") == reason
    assert rest.fs("alpha", "/files", "list", path="/").status_code == 200


def test_fault_limited_to_one_vm(sim, callers):
    vi, _ = callers
    sim.fault("ListFilesInGuest", "TaskInProgress", times=1, vm="beta")
    assert vi.guest("ListFilesInGuest", "alpha", filePath="/").status_code == 200
    assert vi.guest("ListFilesInGuest", "beta", filePath="/").json()["_typeName"] == "TaskInProgress"
    assert vi.guest("ListFilesInGuest", "beta", filePath="/").status_code == 200


def test_powered_off_and_suspended_vm_refuse_guest_ops(sim, callers):
    vi, _ = callers
    for state in ("poweredOff", "suspended"):
        sim.power("alpha", state)
        body = vi.guest("ListFilesInGuest", "alpha", filePath="/").json()
        assert body["_typeName"] == "InvalidPowerState" and body["existingState"] == state
    sim.power("alpha", "poweredOn")
    assert vi.guest("ListFilesInGuest", "alpha", filePath="/").status_code == 200


def test_tools_off_is_guest_operations_unavailable(sim, callers):
    vi, _ = callers
    sim.tools("alpha", False)
    assert vi.guest("MakeDirectoryInGuest", "alpha", directoryPath="/z", createParentDirectories=False).json()["_typeName"] == "GuestOperationsUnavailable"
    assert not (sim.root / "alpha" / "z").exists()


def test_power_off_kills_unused_urls(sim, callers):
    vi, _ = callers
    url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"].replace("*", "127.0.0.1")
    sim.power("alpha", "poweredOff")
    sim.power("alpha", "poweredOn")
    assert httpx.get(url, timeout=10).status_code == 404


def test_stats_count_both_dialects_under_vi_names_and_reset(sim, callers):
    vi, rest = callers
    sim.reset_stats()
    vi.guest("ListFilesInGuest", "alpha", filePath="/")
    rest.fs("alpha", "/files", "list", path="/")
    from urllib.parse import quote

    rest.http.post(f"/api/vcenter/vm/{rest.vm_id('alpha')}/guest/filesystem/files/{quote('/f', safe='')}", params={"action": "get"}, json={"credentials": rest.creds()})
    info = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()
    httpx.get(info["url"].replace("*", "127.0.0.1"), timeout=10)
    rest.fs("alpha", "/directories", "create", path="/made")
    stats = sim.stats()
    assert stats["ListFilesInGuest"] == 3
    assert stats["InitiateFileTransferFromGuest"] == 1 and stats["guestFile.GET"] == 1
    assert stats["MakeDirectoryInGuest"] == 1
    sim.reset_stats()
    assert sim.stats() == {}


def test_latency_delays_api_calls_not_controls(tmp_path):
    (tmp_path / "vms" / "alpha").mkdir(parents=True)
    with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log", latency_ms=300) as sim:
        vi = ViCaller(sim)
        vi.vm_id("alpha")
        start = time.monotonic()
        assert vi.guest("ListFilesInGuest", "alpha", filePath="/").status_code == 200
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        sim.stats()
        assert time.monotonic() - start < 0.3
        vi.close()


def test_log_has_one_line_per_call_and_no_secrets(sim, callers, tmp_path):
    vi, rest = callers
    info = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()
    token = info["url"].split("token=")[1]
    httpx.get(info["url"].replace("*", "127.0.0.1"), timeout=10)
    session = vi.http.headers["vmware-api-session-id"]
    deadline = time.monotonic() + 10
    log = tmp_path / "sim.log"
    while "guestFile.GET" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    assert "op=InitiateFileTransferFromGuest vm=alpha path='/f' -> 200" in text
    assert "guestFile.GET" in text
    for secret in (token, session, sim.vc_password, sim.guest_password):
        assert secret not in text
