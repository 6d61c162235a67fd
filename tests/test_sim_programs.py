"""The simulator's guest programs (sim/guestprocs.py) in both dialects over real sockets: StartProgramInGuest and
ListProcessesInGuest, REST guest/processes; the command line parsed as bash parses it, and nothing else run."""

from __future__ import annotations

import os
import subprocess

import pytest

from guestfs_mount.sim.guestprocs import Unsupported, shell_words
from tests.test_sim_rest import rest  # noqa: F401  (fixture)
from tests.test_sim_vijson import vi  # noqa: F401  (fixture)

ENV = {"A": "x y", "B": "$(touch /tmp/guestfs-never) `id` ; | & *", "C": "-rf\nnewline", "E": ""}

ALLOWED = [
    '"/bin/ln" -s -- "$A" "$B"',
    '"/bin/ln" "${C}" "$E" "$UNSET"',
    "\"/bin/touch\" -h -d @1600000000 -- 'single $A \"quoted\"'",
    '"/bin/ln" a"$A"b\'c d\'e plain=word:with,chars@x%y+z',
    '"/bin/ln"',
]


@pytest.mark.parametrize("command", ALLOWED)
def test_shell_words_are_what_bash_makes(command):
    """The simulator's parse against the real bash, with the program swapped for a printer of its arguments."""
    printer = command.replace('"/bin/ln"', "printf '%s\\0' _", 1).replace('"/bin/touch"', "printf '%s\\0' _", 1)
    out = subprocess.run(["bash", "-c", printer], env=ENV, capture_output=True, timeout=10, check=True).stdout
    from_bash = out.decode().split("\0")[1:-1]
    assert shell_words(command, ENV)[1:] == from_bash


@pytest.mark.parametrize("command", [
    '"/bin/ln" -s $A b',  # unquoted expansion: split and globbed by a real shell
    '"/bin/ln" a; rm -rf /',
    '"/bin/ln" a | cat',
    '"/bin/ln" a && b',
    '"/bin/ln" a > out',
    '"/bin/ln" `id`',
    '"/bin/ln" "$(id)"',
    '"/bin/ln" a\\ b',
    '"/bin/ln" *',
    '"/bin/ln" ~root',
    '"/bin/ln" a\nb',
    '"/bin/ln" "$1"',
    '"/bin/ln" "unterminated',
    '"/bin/ln" "a!b"',
    '"/bin/ln" {a,b}',
])
def test_shell_words_refuse_the_rest(command):
    with pytest.raises(Unsupported):
        shell_words(command, ENV)


def _spec(path, argv):
    env = [f"GUESTFS_ARG{i}={a}" for i, a in enumerate(argv, 1)]
    args = " ".join(f'"$GUESTFS_ARG{i}"' for i in range(1, len(argv) + 1))
    return {"_typeName": "GuestProgramSpec", "programPath": path, "arguments": args, "envVariables": env,
            "workingDirectory": "/"}


def _vi_process(vi, method, **body):
    pm = vi.get("GuestOperationsManager", "guestOperationsManager", "processManager").json()
    assert pm == {"_typeName": "ManagedObjectReference", "type": "GuestProcessManager",
                  "value": "guestOperationsProcessManager"}
    vm_ref = {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": vi.vm_id("alpha")}
    auth = {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": vi.sim.guest_user,
            "password": vi.sim.guest_password}
    return vi.post("GuestProcessManager", pm["value"], method, {"vm": vm_ref, "auth": auth, **body})


def test_vi_ln_symlink_with_a_hostile_name_and_its_exit_code(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "d").mkdir()
    name = "/d/-n $(touch x) `id`;\n'\"*"
    started = _vi_process(vi, "StartProgramInGuest", spec=_spec("/bin/ln", ["-s", "--", "../t a\nrg", name]))
    assert started.status_code == 200, started.text
    pid = started.json()
    assert isinstance(pid, int)
    assert os.readlink(root / name.lstrip("/")) == "../t a\nrg"
    assert sorted(os.listdir(root / "d")) == [name[3:]]  # nothing else was made or run
    listed = _vi_process(vi, "ListProcessesInGuest", pids=[pid])
    [info] = listed.json()
    assert info["_typeName"] == "GuestProcessInfo" and info["pid"] == pid and info["exitCode"] == 0
    assert info["endTime"] and info["startTime"] and info["name"] == "ln" and info["owner"] == sim.guest_user
    # the same again: the name exists, ln exits 1
    again = _vi_process(vi, "StartProgramInGuest", spec=_spec("/bin/ln", ["-s", "--", "other", name])).json()
    assert _vi_process(vi, "ListProcessesInGuest", pids=[again]).json()[0]["exitCode"] == 1


def test_vi_hard_link_touch_and_gnu_ln_into_a_directory(sim, vi):
    root = sim.vm_dir("alpha")
    (root / "f").write_text("data")
    (root / "dir").mkdir()
    os.symlink("f", root / "lnk")

    def run(path, argv):
        pid = _vi_process(vi, "StartProgramInGuest", spec=_spec(path, argv)).json()
        return _vi_process(vi, "ListProcessesInGuest", pids=[pid]).json()[0]["exitCode"]

    assert run("/bin/ln", ["--", "/f", "/g"]) == 0
    assert os.stat(root / "g").st_ino == os.stat(root / "f").st_ino
    assert run("/bin/ln", ["--", "/dir", "/dir2"]) == 1  # no hard links of directories
    assert run("/bin/ln", ["-s", "--", "/x", "/dir"]) == 0  # GNU ln: an existing directory gets the link inside
    assert os.readlink(root / "dir/x") == "/x"
    os.symlink("/dir", root / "to-dir")  # the guest's /dir, not the host's: followed inside the guest
    os.symlink(str(root.parent / "host-dir"), root / "to-host")
    (root.parent / "host-dir").mkdir()
    assert run("/bin/ln", ["-s", "--", "/y", "/to-dir"]) == 0
    assert os.readlink(root / "dir/y") == "/y"
    assert run("/bin/ln", ["-s", "--", "/z", "/to-host"]) == 1  # a link in the guest's way: EEXIST, nothing made
    assert os.listdir(root.parent / "host-dir") == []
    before = os.stat(root / "f").st_mtime
    assert run("/bin/touch", ["-h", "-m", "-d", "@1500000000", "--", "/lnk"]) == 0
    assert os.lstat(root / "lnk").st_mtime == 1500000000 and os.stat(root / "f").st_mtime == before
    assert run("/bin/touch", ["-h", "-d", "@1500000000", "--", "/missing"]) == 1
    assert run("/bin/ln", ["--bogus", "a", "b"]) == 1


def test_vi_programs_that_are_not_there_and_command_lines_not_run(sim, vi):
    root = sim.vm_dir("alpha")
    for path in ("/bin/sh", "/usr/bin/ln", "/bin/rm", "ln"):
        r = _vi_process(vi, "StartProgramInGuest", spec=_spec(path, ["x"]))
        assert r.status_code == 500 and r.json()["_typeName"] == "FileNotFound", (path, r.text)
    spec = {"_typeName": "GuestProgramSpec", "programPath": "/bin/ln", "arguments": "-s target /made; touch /pwned"}
    pid = _vi_process(vi, "StartProgramInGuest", spec=spec).json()
    assert _vi_process(vi, "ListProcessesInGuest", pids=[pid]).json()[0]["exitCode"] == 2
    assert not (root / "made").exists() and not (root / "pwned").exists()
    bad_env = {**_spec("/bin/ln", ["a", "b"]), "envVariables": ["NOEQUALS"]}
    assert _vi_process(vi, "StartProgramInGuest", spec=bad_env).json()["_typeName"] == "InvalidArgument"
    assert _vi_process(vi, "ListProcessesInGuest", pids=[999999]).status_code == 204  # unknown: no entries


def test_vi_program_privilege_and_guest_login_faults(sim, vi):
    sim.fault("StartProgramInGuest", "NoPermission")
    r = _vi_process(vi, "StartProgramInGuest", spec=_spec("/bin/ln", ["-s", "t", "/l"]))
    assert r.json()["_typeName"] == "NoPermission"
    assert not os.path.lexists(sim.vm_dir("alpha") / "l")
    sim.power("alpha", "poweredOff")
    assert _vi_process(vi, "ListProcessesInGuest", pids=[1]).json()["_typeName"] == "InvalidPowerState"
    assert sim.stats()["StartProgramInGuest"] == 1


def test_rest_processes_create_get_list(sim, rest):
    root = sim.vm_dir("alpha")
    base = f"/api/vcenter/vm/{rest.vm_id('alpha')}/guest/processes"
    spec = {"path": "/bin/ln", "arguments": '"$GUESTFS_ARG1" "$GUESTFS_ARG2" "$GUESTFS_ARG3" "$GUESTFS_ARG4"',
            "environment_variables": {"GUESTFS_ARG1": "-s", "GUESTFS_ARG2": "--", "GUESTFS_ARG3": "t 'q'",
                                      "GUESTFS_ARG4": "/-l ink"},
            "working_directory": "/"}
    r = rest.http.post(base, params={"action": "create"}, json={"credentials": rest.creds(), "spec": spec})
    assert r.status_code == 201, r.text
    pid = r.json()
    assert isinstance(pid, int) and os.readlink(root / "-l ink") == "t 'q'"
    got = rest.http.post(f"{base}/{pid}", params={"action": "get"}, json={"credentials": rest.creds()})
    assert got.status_code == 200
    info = got.json()
    assert set(info) == {"name", "owner", "command", "started", "finished", "exit_code"} and info["exit_code"] == 0
    listed = rest.http.post(base, params={"action": "list"}, json={"credentials": rest.creds()}).json()
    assert [p["pid"] for p in listed] == [pid]
    missing = rest.http.post(f"{base}/12345", params={"action": "get"}, json={"credentials": rest.creds()})
    assert missing.status_code == 404 and missing.json()["error_type"] == "NOT_FOUND"
    nothing = rest.http.post(base, params={"action": "create"},
                             json={"credentials": rest.creds(), "spec": {"path": "/bin/bash", "arguments": "-c id"}})
    assert nothing.status_code == 404 and nothing.json()["data"]["reason"] == "FILE_NOT_FOUND"
    sim.fault("StartProgramInGuest", "NoPermission")
    denied = rest.http.post(base, params={"action": "create"}, json={"credentials": rest.creds(), "spec": spec})
    assert denied.status_code == 403 and denied.json()["error_type"] == "UNAUTHORIZED"
    bad_login = rest.http.post(base, params={"action": "create"}, json={"credentials": rest.creds("wrong"),
                                                                        "spec": spec})
    assert bad_login.status_code == 401
    assert sim.stats()["StartProgramInGuest"] == 4 and sim.stats()["ListProcessesInGuest"] == 3
