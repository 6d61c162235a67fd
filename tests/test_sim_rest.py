"""The simulator's Automation REST dialect over real sockets, responses checked against the shared Swagger specs."""

import json
import os
import stat
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.helpers.simulator import RestCaller

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
VCENTER_SPEC = SPECS / "vcenter-7.0.3-guestfs-subset.json"
SESSION_SPEC = SPECS / "session-8.0.2.json"


def _validator(spec_path):
    if not spec_path.exists():
        pytest.skip(f"API spec {spec_path} not found (CI keeps ../shared beside the repo)")
    spec = json.loads(spec_path.read_text())

    def validate(instance, name=None, schema=None):
        schema = schema if schema is not None else {"$ref": f"#/definitions/{name}"}
        jsonschema.validate(instance, {**schema, "definitions": spec["definitions"]})

    return validate


@pytest.fixture
def vc_schema():
    return _validator(VCENTER_SPEC)


@pytest.fixture
def session_schema():
    return _validator(SESSION_SPEC)


@pytest.fixture
def rest(sim):
    caller = RestCaller(sim)
    yield caller
    caller.close()


def local_url(sim, url):
    assert url.startswith("http://*:")
    return url.replace("*", "127.0.0.1", 1)


def test_session_create_get_delete(sim, session_schema):
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        r = http.post("/api/session", auth=(sim.vc_user, sim.vc_password))
        assert r.status_code == 201
        token = r.json()
        assert isinstance(token, str) and token
        info = http.get("/api/session", headers={"vmware-api-session-id": token})
        assert info.status_code == 200
        session_schema(info.json(), "CisSessionInfo")
        assert http.delete("/api/session", headers={"vmware-api-session-id": token}).status_code == 204
        gone = http.get("/api/session", headers={"vmware-api-session-id": token})
        assert gone.status_code == 401
        session_schema(gone.json(), "VapiStdErrorsUnauthenticated")
        assert gone.json()["error_type"] == "UNAUTHENTICATED"


def test_session_bad_password_is_401_with_challenge(sim, session_schema):
    r = httpx.post(f"{sim.url}/api/session", auth=(sim.vc_user, "wrong"), timeout=10)
    assert r.status_code == 401
    body = r.json()
    session_schema(body, "VapiStdErrorsUnauthenticated")
    assert body["error_type"] == "UNAUTHENTICATED" and "Basic" in body["challenge"]


def test_vm_list_filters(sim, rest, vc_schema):
    sim.power("beta", "poweredOff")
    r = rest.http.get("/api/vcenter/vm")
    assert r.status_code == 200
    vc_schema(r.json(), schema={"type": "array", "items": {"$ref": "#/definitions/VcenterVMSummary"}})
    states = {v["name"]: v["power_state"] for v in r.json()}
    assert states == {"alpha": "POWERED_ON", "beta": "POWERED_OFF"}
    both = rest.http.get("/api/vcenter/vm", params=[("names", "alpha"), ("names", "beta")]).json()
    assert sorted(v["name"] for v in both) == ["alpha", "beta"]
    on = rest.http.get("/api/vcenter/vm", params={"power_states": "POWERED_ON"}).json()
    assert [v["name"] for v in on] == ["alpha"]
    assert rest.http.get("/api/vcenter/vm", params={"power_states": "BOGUS"}).status_code == 400


def test_vm_id_equals_vi_moref(sim, rest):
    from tests.helpers.simulator import ViCaller

    vi = ViCaller(sim)
    assert rest.vm_id("beta") == vi.vm_id("beta")
    vi.close()


def test_guest_identity_and_operations(sim, rest, vc_schema):
    vm = rest.vm_id("alpha")
    ops = rest.http.get(f"/api/vcenter/vm/{vm}/guest/operations")
    vc_schema(ops.json(), "VcenterVmGuestOperationsInfo")
    assert ops.json()["guest_operations_ready"] is True
    ident = rest.http.get(f"/api/vcenter/vm/{vm}/guest/identity").json()
    assert ident["family"] == "LINUX"
    sim.tools("alpha", False)
    assert rest.http.get(f"/api/vcenter/vm/{vm}/guest/operations").json()["guest_operations_ready"] is False
    r = rest.http.get(f"/api/vcenter/vm/{vm}/guest/identity")
    assert r.status_code == 503 and r.json()["error_type"] == "SERVICE_UNAVAILABLE"
    assert rest.http.get("/api/vcenter/vm/vm-999/guest/operations").status_code == 404


def test_list_drops_dot_entries_pages_and_filters(sim, rest, vc_schema):
    d = sim.vm_dir("alpha") / "etc"
    d.mkdir()
    for name in ("hosts", "hostname", "passwd"):
        (d / name).write_text(name)
    (d / "sub").mkdir()
    os.symlink("hosts", d / "ln")
    r = rest.fs("alpha", "/files", "list", path="/etc")
    assert r.status_code == 200
    body = r.json()
    vc_schema(body, "VcenterVmGuestFilesystemFilesListResult")
    files = {f["filename"]: f for f in body["files"]}
    assert sorted(files) == ["hostname", "hosts", "ln", "passwd", "sub"]
    assert files["hosts"] == {"filename": "hosts", "type": "FILE", "size": 5}
    assert files["sub"]["type"] == "DIRECTORY" and files["ln"]["type"] == "SYMLINK"
    assert body["total"] == 5 and body["status"] == "END_OF_DATA"
    seen = []
    index = 0
    while True:
        page = rest.fs("alpha", "/files", "list", path="/etc", iteration={"size": 2, "index": index}).json()
        vc_schema(page, "VcenterVmGuestFilesystemFilesListResult")
        seen += [f["filename"] for f in page["files"]]
        assert page["start_index"] == index and page["end_index"] == index + len(page["files"]) - 1
        index += len(page["files"])
        if page["status"] == "END_OF_DATA":
            break
        assert page["status"] == "READY"
    assert sorted(seen) == sorted(files)
    filtered = rest.fs("alpha", "/files", "list", path="/etc", filter={"match_pattern": "^host"}).json()
    assert sorted(f["filename"] for f in filtered["files"]) == ["hostname", "hosts"]


def test_get_file_info_with_encoded_path(sim, rest, vc_schema):
    d = sim.vm_dir("alpha") / "my dir"
    d.mkdir()
    (d / "f ü.txt").write_text("abc")
    os.chmod(d / "f ü.txt", 0o640)
    vm = rest.vm_id("alpha")
    for encoded in ("%2Fmy%20dir%2Ff%20%C3%BC.txt", "/my%20dir/f%20%C3%BC.txt"):
        r = rest.http.post(
            f"/api/vcenter/vm/{vm}/guest/filesystem/files/{encoded}",
            params={"action": "get"},
            json={"credentials": rest.creds()},
        )
        assert r.status_code == 200, r.text
        info = r.json()
        vc_schema(info, "VcenterVmGuestFilesystemFilesInfo")
        assert info["type"] == "FILE" and info["size"] == 3
        assert info["attributes"]["posix_attributes"]["permissions"] == "640"
        assert info["attributes"]["filesystem_family"] == "POSIX"


def rest_path(rest, vm, path, action):
    from urllib.parse import quote

    url = f"/api/vcenter/vm/{rest.vm_id(vm)}/guest/filesystem/files/{quote(path, safe='')}"
    return rest.http.post(url, params={"action": action}, json={"credentials": rest.creds()})


def test_get_missing_is_404_file_not_found(sim, rest, vc_schema):
    r = rest_path(rest, "alpha", "/nope", "get")
    assert r.status_code == 404
    vc_schema(r.json(), "VapiStdErrorsNotFound")
    assert r.json()["error_type"] == "NOT_FOUND" and r.json()["data"]["reason"] == "FILE_NOT_FOUND"


def test_transfer_from_and_to_guest(sim, rest):
    (sim.vm_dir("alpha") / "src").write_bytes(b"payload")
    r = rest.fs("alpha", "", "create", spec={"path": "/src"})
    assert r.status_code == 201
    url = local_url(sim, r.json())
    assert httpx.get(url, timeout=10).content == b"payload"
    assert httpx.get(url, timeout=10).status_code == 404
    spec = {
        "path": "/dst",
        "attributes": {"size": 5, "overwrite": False, "last_modified": "2024-06-01T12:00:00.000Z", "posix": {"owner_id": 5, "group_id": 6, "permissions": "0604"}},
    }
    r = rest.fs("alpha", "", "create", spec=spec)
    assert r.status_code == 201
    assert httpx.put(local_url(sim, r.json()), content=b"12345", timeout=10).status_code == 200
    st = (sim.vm_dir("alpha") / "dst").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o604, 5, 6, 1717243200)
    again = rest.fs("alpha", "", "create", spec=spec)
    assert again.status_code == 400 and again.json()["error_type"] == "ALREADY_EXISTS"
    stats = sim.stats()
    assert stats["InitiateFileTransferFromGuest"] == 1 and stats["InitiateFileTransferToGuest"] == 2
    assert stats["guestFile.GET"] == 2 and stats["guestFile.PUT"] == 1


def test_files_delete_move_update_create_temporary(sim, rest):
    root = sim.vm_dir("alpha")
    (root / "a").write_text("A")
    (root / "tmp").mkdir()
    assert rest.fs("alpha", "/files", "move", path="/a", new_path="/b").status_code == 204
    assert (root / "b").read_text() == "A"
    upd = rest.fs("alpha", "/files", "update", path="/b", file_attributes={"posix": {"permissions": "0755", "owner_id": 9}, "last_modified": "2020-01-01T00:00:00Z"})
    assert upd.status_code == 204
    st = (root / "b").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 9 and int(st.st_mtime) == 1577836800
    tmp = rest.fs("alpha", "/files", "createTemporary", prefix="x-", suffix=".t", parent_path="/tmp")
    assert tmp.status_code == 200 and tmp.json().startswith("/tmp/x-")
    assert rest_path(rest, "alpha", "/b", "delete").status_code == 204
    assert not (root / "b").exists()
    r = rest_path(rest, "alpha", "/tmp", "delete")
    assert r.status_code == 400 and r.json()["data"]["reason"] == "NOT_A_FILE"


def test_directories(sim, rest, vc_schema):
    root = sim.vm_dir("alpha")
    assert rest.fs("alpha", "/directories", "create", path="/d").status_code == 204
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o700
    r = rest.fs("alpha", "/directories", "create", path="/d")
    assert r.status_code == 400 and r.json()["error_type"] == "ALREADY_EXISTS"
    r = rest.fs("alpha", "/directories", "create", path="/p/q")
    assert r.status_code == 404
    vc_schema(r.json(), "VapiStdErrorsNotFound")
    assert rest.fs("alpha", "/directories", "create", path="/p/q", create_parents=True).status_code == 204
    r = rest.fs("alpha", "/directories", "delete", path="/p")
    assert r.status_code == 400 and r.json()["error_type"] == "RESOURCE_IN_USE" and r.json()["data"]["reason"] == "DIRECTORY_NOT_EMPTY"
    (root / "f").write_text("x")
    r = rest.fs("alpha", "/directories", "delete", path="/f")
    assert r.status_code == 400 and r.json()["error_type"] == "INVALID_ARGUMENT" and r.json()["data"]["reason"] == "NOT_A_DIRECTORY"
    assert rest.fs("alpha", "/directories", "move", path="/p", new_path="/d").json()["error_type"] == "ALREADY_EXISTS"
    assert rest.fs("alpha", "/directories", "move", path="/p", new_path="/p2").status_code == 204
    assert rest.fs("alpha", "/directories", "delete", path="/p2", recursive=True).status_code == 204
    assert not (root / "p2").exists()
    t = rest.fs("alpha", "/directories", "createTemporary", prefix="tp", suffix="", parent_path="/d")
    assert t.status_code == 200 and (root / t.json().lstrip("/")).is_dir()


def test_bad_guest_credentials_and_expired_session_are_401(sim, rest, vc_schema):
    r = rest.fs("alpha", "/files", "list", password="nope", path="/")
    assert r.status_code == 401
    vc_schema(r.json(), "VapiStdErrorsUnauthenticated")
    rest.vm_id("alpha")
    sim.expire_sessions()
    r = rest.fs("alpha", "/files", "list", path="/")
    assert r.status_code == 401 and r.json()["error_type"] == "UNAUTHENTICATED"
    assert rest.http.get("/api/session").status_code == 401


def test_power_off_and_tools_off_errors(sim, rest, vc_schema):
    rest.vm_id("alpha")
    sim.power("alpha", "poweredOff")
    r = rest.fs("alpha", "/files", "list", path="/")
    assert r.status_code == 400 and r.json()["error_type"] == "NOT_ALLOWED_IN_CURRENT_STATE"
    sim.power("alpha", "poweredOn")
    sim.tools("alpha", False)
    r = rest.fs("alpha", "/files", "list", path="/")
    assert r.status_code == 503
    vc_schema(r.json(), "VapiStdErrorsServiceUnavailable")
    sim.tools("alpha", True)
    assert rest.fs("alpha", "/files", "list", path="/").status_code == 200


def test_release_negotiation_hello(sim):
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        r = http.post("/api/vcenter/system", params={"action": "hello"}, json={"api_releases": ["9.1.0.0", "8.0.3.0", "8.0.2.0"]})
        assert r.status_code == 200 and r.json() == {"api_release": "8.0.3.0"}
        r = http.post("/api/vcenter/system", params={"action": "hello"}, json={"api_releases": ["7.0.3.0"]})
        assert r.json() == {"api_release": ""}


def test_vm_list_without_session_is_401(sim, vc_schema):
    r = httpx.get(f"{sim.url}/api/vcenter/vm", timeout=10)
    assert r.status_code == 401
    vc_schema(r.json(), "VapiStdErrorsUnauthenticated")


def test_malformed_json_is_an_error_in_each_dialect(sim):
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        r = http.post("/api/vcenter/vm/vm-1/guest/filesystem/files", params={"action": "list"}, content=b"{nope", headers=headers)
        assert r.status_code == 400 and r.json()["error_type"] == "INVALID_REQUEST"
        r = http.post("/sdk/vim25/8.0.1.0/SessionManager/SessionManager/Login", content=b"{nope", headers=headers)
        assert r.status_code == 500 and r.json()["_typeName"] == "InvalidRequest"
