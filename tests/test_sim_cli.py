"""The `guestfs-sim` process: its stdout contract, TLS, options, initial VM state, Windows guests, clean exit."""

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers.simulator import RestCaller, ViCaller, running_simulator


def make_root(tmp_path, *names):
    root = tmp_path / "vms"
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def test_tls_serves_https_with_printed_ca_and_host_certificate_is_the_leaf(tmp_path):
    root = make_root(tmp_path, "alpha")
    (root / "alpha" / "f").write_bytes(b"secret bytes")
    with running_simulator(root, log_path=tmp_path / "sim.log", tls=True) as sim:
        assert sim.url.startswith("https://127.0.0.1:") and os.path.exists(sim.ca_path)
        ca_dir = os.path.dirname(sim.ca_path)
        vi = ViCaller(sim)
        spec = {
            "_typeName": "PropertyFilterSpec",
            "propSet": [{"_typeName": "PropertySpec", "type": "HostSystem", "pathSet": ["name", "config.certificate", "summary.config.sslThumbprint"]}],
            "objectSet": [{"_typeName": "ObjectSpec", "obj": {"_typeName": "ManagedObjectReference", "type": "HostSystem", "value": "host-10"}}],
        }
        body = vi.post("PropertyCollector", "propertyCollector", "RetrievePropertiesEx", {"specSet": [spec], "options": {"_typeName": "RetrieveOptions"}}).json()
        got = {p["name"]: p["val"] for p in body["objects"][0]["propSet"]}
        cert = got["config.certificate"]
        assert cert["_typeName"] == "ArrayOfByte" and all(-128 <= b <= 127 for b in cert["_value"])
        pem = bytes(b & 0xFF for b in cert["_value"]).decode()
        port = int(sim.url.rsplit(":", 1)[1])
        served = ssl.get_server_certificate(("127.0.0.1", port), ca_certs=sim.ca_path)
        assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(served)
        assert ":" in got["summary.config.sslThumbprint"]["_value"]
        # pin the host certificate alone, as a client does for transfer URLs
        url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
        assert url.startswith("https://*:")
        pinned = ssl.create_default_context(cadata=pem)
        pinned.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # trust the leaf itself, not its CA
        pinned.check_hostname = False  # a client rewrites `*`, so the name need not match
        with httpx.Client(verify=pinned, timeout=10) as http:
            assert http.get(url.replace("*", "127.0.0.1")).content == b"secret bytes"
        rest = RestCaller(sim)
        assert rest.vm_id("alpha") == vi.vm_id("alpha")
        vi.close()
        rest.close()
    assert not os.path.exists(ca_dir)


def test_plain_client_cannot_talk_to_tls_without_ca(tmp_path):
    with running_simulator(make_root(tmp_path, "alpha"), log_path=tmp_path / "sim.log", tls=True) as sim:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sim.url}/sdk/vim25/8.0.1.0/ServiceInstance/ServiceInstance/content", timeout=10)


def test_transfer_host_and_custom_credentials(tmp_path):
    root = make_root(tmp_path, "alpha")
    (root / "alpha" / "f").write_text("x")
    extra = ["--transfer-host", "esx01.example", "--vc-user", "me", "--vc-password", "pw1", "--guest-user", "gu", "--guest-password", "pw2"]
    with running_simulator(root, log_path=tmp_path / "sim.log", extra_args=extra) as sim:
        assert (sim.vc_user, sim.guest_password) == ("me", "pw2")
        vi = ViCaller(sim)
        url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
        port = sim.url.rsplit(":", 1)[1]
        assert url.startswith(f"http://esx01.example:{port}/guestFile?id=")
        bad = vi.guest("ListFilesInGuest", "alpha", auth={"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": "root", "password": "vmware"}, filePath="/")
        assert bad.json()["_typeName"] == "InvalidGuestLogin"
        vi.close()


def test_initial_state_from_vms_json(tmp_path):
    root = make_root(tmp_path, "old", "tpl", "quiet", "ok")
    (root / ".vms.json").write_text(json.dumps({"old": {"powerState": "poweredOff"}, "tpl": {"template": True}, "quiet": {"toolsRunning": False}}))
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim:
        rest = RestCaller(sim)
        states = {v["name"]: v["power_state"] for v in rest.http.get("/api/vcenter/vm").json()}
        assert states == {"old": "POWERED_OFF", "ok": "POWERED_ON", "quiet": "POWERED_ON", "tpl": "POWERED_ON"}
        ops = rest.http.get(f"/api/vcenter/vm/{rest.vm_id('quiet')}/guest/operations").json()
        assert ops["guest_operations_ready"] is False
        rest.close()


def test_windows_guest_paths_and_attributes(tmp_path):
    root = make_root(tmp_path, "win01")
    (root / ".vms.json").write_text(json.dumps({"win01": {"guestFamily": "windowsGuest"}}))
    (root / "win01" / "C" / "Windows").mkdir(parents=True)
    (root / "win01" / "C" / "Windows" / "win.ini").write_text("[fonts]\r\n")
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim:
        vi = ViCaller(sim)
        body = vi.guest("ListFilesInGuest", "win01", filePath="C:\\Windows").json()
        files = {f["path"]: f for f in body["files"]}
        assert files["win.ini"]["size"] == 9
        assert files["win.ini"]["attributes"]["_typeName"] == "GuestWindowsFileAttributes"
        posix = vi.guest("ChangeFileAttributesInGuest", "win01", guestFilePath="C:\\Windows\\win.ini", fileAttributes={"_typeName": "GuestPosixFileAttributes", "permissions": 0o600})
        assert posix.json()["_typeName"] == "InvalidArgument"
        ro = vi.guest("ChangeFileAttributesInGuest", "win01", guestFilePath="C:\\Windows\\win.ini", fileAttributes={"_typeName": "GuestWindowsFileAttributes", "readOnly": True})
        assert ro.status_code == 204
        assert not stat.S_IMODE((root / "win01" / "C" / "Windows" / "win.ini").stat().st_mode) & 0o222
        assert vi.guest("MakeDirectoryInGuest", "win01", directoryPath="C:\\Users\\bob", createParentDirectories=True).status_code == 204
        assert (root / "win01" / "C" / "Users" / "bob").is_dir()
        rest = RestCaller(sim)
        assert rest.http.get(f"/api/vcenter/vm/{rest.vm_id('win01')}/guest/identity").json()["family"] == "WINDOWS"
        vi.close()
        rest.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path, sig):
    root = make_root(tmp_path, "alpha")
    args = [sys.executable, "-m", "guestfs_mount.sim", "--root", str(root), "--listen", "127.0.0.1:0", "--tls"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        first = proc.stdout.readline().decode()
        second = proc.stdout.readline().decode()
        assert first.startswith("guestfs-sim: listening on https://127.0.0.1:")
        ca = second.removeprefix("guestfs-sim: CA certificate at ").strip()
        assert os.path.exists(ca)
        url = first.split(" on ")[1].strip()
        # an open keep-alive connection must not hold up the exit
        client = httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=10)
        client.get(f"{url}/_sim/stats")
        time.sleep(0.1)
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert not os.path.exists(ca)
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_bad_root_fails_with_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "guestfs_mount.sim", "--root", str(tmp_path / "nope"), "--listen", "127.0.0.1:0"], capture_output=True, timeout=20)
    assert r.returncode != 0 and b"not a directory" in r.stderr
