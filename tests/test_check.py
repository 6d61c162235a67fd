"""`guestfs-mount check`, run as an admin runs it (a subprocess with a config file) against the simulator: healthy
(plain and TLS, both dialects), then each step broken in turn, asserting the step's line, its advice and the exit
code; `--json` parsed. The simulators are shared by a module and put back as they were after each test."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.helpers.commands import guestfs_mount
from tests.helpers.configmount import config_text, write_private
from tests.helpers.simulator import running_simulator

HOST = "esx01.sim.invalid"  # a name that never resolves: the simulated ESXi host listens at 127.0.0.11
MODIFY = "VirtualMachine.GuestOperations.Modify"
EXECUTE = "VirtualMachine.GuestOperations.Execute"
QUERY = "VirtualMachine.GuestOperations.Query"


def populate(root: Path) -> None:
    for vm in ("alpha", "beta"):
        (root / vm / "etc").mkdir(parents=True)
        (root / vm / "etc/hostname").write_text(f"{vm}\n")  # `/` has no file: the download comes from /etc
    (root / "win01/C/Windows").mkdir(parents=True)
    (root / "win01/C/Windows/win.ini").write_text("; for 16-bit app support\r\n")
    (root / ".vms.json").write_text(json.dumps({"win01": {"guestFamily": "windowsGuest"}}))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    populate(tmp / "vms")
    with running_simulator(tmp / "vms", log_path=tmp / "sim.log") as sim:
        yield sim


@pytest.fixture
def sim(plain):
    """The plain simulator, put back afterwards: every VM on with Tools, every privilege granted."""
    yield plain
    plain.withhold()
    for vm in ("alpha", "beta", "win01"):
        plain.power(vm, "poweredOn")
        plain.tools(vm, True)


@pytest.fixture(scope="module")
def esx(tmp_path_factory):
    """A TLS vCenter whose ESXi host's inventory name does not resolve (it listens at 127.0.0.11)."""
    tmp = tmp_path_factory.mktemp("esx")
    (tmp / "vms/alpha/etc").mkdir(parents=True)
    (tmp / "vms/alpha/motd").write_text("welcome\n")
    with running_simulator(tmp / "vms", log_path=tmp / "sim.log", tls=True,
                           extra_args=["--hosts", f"{HOST}=127.0.0.11"]) as sim:
        yield sim


def check(tmp: Path, url: str, *args, api: str = "auto", vcenter: str = "", vms: str | None = None, label="c"):
    """`guestfs-mount check --config FILE ARGS` with a config for the simulator's logins; (exit code, stdout)."""
    body = config_text(tmp, url, api, vcenter_extra='password = "vmware"\n' + vcenter, vms=vms)
    config = write_private(tmp / f"{label}.toml", body)
    done = guestfs_mount("check", "--config", config, *args, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def step(out: str, title: str) -> tuple[str, str]:
    """The line of a step (its mark and text) and its advice ('' when none)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        mark, _, rest = line.partition(" ")
        if rest.startswith(f"{title}: "):
            advice = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("    ") else ""
            return f"{mark} {rest[len(title) + 2:]}", advice.removeprefix("what to do: ")
    raise AssertionError(f"no step {title!r} in:\n{out}")


def marks(out: str) -> list[str]:
    return [line.split(" ", 1)[0] for line in out.splitlines()[1:-1] if not line.startswith("    ")]


# ---------------------------------------------------------------------------------------------- healthy
@pytest.mark.parametrize("api", ["auto", "rest"])
def test_a_healthy_vcenter_passes_every_step(sim, tmp_path, api):
    """The first powered-on VM of each login table (here [vms.default]: alpha) walks the whole path; --write adds
    an upload to a temporary file that is read back and deleted."""
    code, out = check(tmp_path, sim.url, "--write", api=api)
    assert code == 0, out
    assert set(marks(out)) <= {"✓", "!"}, out
    # the simulator speaks every dialect (the list grows with the dialects connect.DIALECTS knows)
    offered, _, chosen = step(out, "API")[0].removeprefix("✓ offered: ").partition("; chosen: ")
    assert {"vi-json", "rest"} <= set(offered.split(", ")), offered
    assert chosen == f'{"vi-json" if api == "auto" else "rest"} (api = "{api}")'
    assert step(out, "login")[0] == "✓ as administrator@vsphere.local"
    assert step(out, "vCenter")[0].startswith("✓ VMware vCenter Server 8.0.3")
    assert step(out, "VMs")[0] == "✓ 3 VMs: 3 powered on, 3 with VMware Tools running"
    assert step(out, "alpha: guest login")[0] == "✓ as root"
    listing = step(out, "alpha: listing")[0]
    assert listing.startswith("✓ /: ") and "etc" in listing, listing  # (and /tmp once --write made it)
    assert step(out, "alpha: download")[0] == "✓ /etc/hostname: 6 bytes"  # `/` had no file: /etc's smallest
    host = step(out, "alpha: ESXi host")[0]
    assert host.startswith("✓ ") and "127.0.0.1:" in host, host
    upload = step(out, "alpha: upload")[0]
    assert upload.startswith("✓ ") and "read back, deleted" in upload, upload
    assert not list((sim.root / "alpha/tmp").glob("guestfs-check-*")), "the temporary file was left behind"
    assert "beta:" not in out  # one VM per login table
    assert out.splitlines()[-1].startswith("all ") and "checks passed" in out.splitlines()[-1]


def test_json_for_scripts_and_every_named_vm(sim, tmp_path):
    """--json: one document, a step per line of the text, stable ids; --vm names the VMs (a Windows one lists C:\\
    and reads from C:\\Windows)."""
    code, out = check(tmp_path, sim.url, "--json", "--vm", "beta", "--vm", "win01")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True, out
    by = {(s["vm"], s["id"]): s for s in doc["steps"]}
    api = by[(None, "api")]["details"]
    assert api["offered"][0] == "vi-json" and "rest" in api["offered"] and (api["chosen"], api["setting"]) == (
        "vi-json", "auto")
    assert by[(None, "vms")]["details"] == {"count": 3, "powered_on": 3, "tools_running": 3}
    assert by[("beta", "download")]["details"] == {"path": "/etc/hostname", "bytes": 5}
    assert by[("win01", "listing")]["details"]["path"] == "C:\\"
    assert by[("win01", "download")]["details"]["path"] == "C:\\Windows\\win.ini"
    assert all(s["status"] in ("ok", "warn") for s in doc["steps"]), doc
    assert ("alpha", "vm") not in by


def test_the_vms_the_mount_would_show(sim, tmp_path):
    """[mount] vms limits the VMs a mount shows: check picks among them (beta, not alpha)."""
    body = config_text(tmp_path, sim.url, "rest", vcenter_extra='password = "vmware"\n', mount_extra='vms = ["beta"]\n')
    done = guestfs_mount("check", "--config", write_private(tmp_path / "c.toml", body))
    assert done.returncode == 0, done.stdout
    assert step(done.stdout, "VMs")[0].startswith("✓ 1 VM (asked for by name): ")
    assert step(done.stdout, "beta: download")[0] == "✓ /etc/hostname: 5 bytes" and "alpha:" not in done.stdout


def test_tls_with_the_ca_and_an_esxi_host_reached_by_its_management_address(esx, tmp_path):
    code, out = check(tmp_path, esx.url, vcenter=f'ca_file = "{esx.ca_path}"\n')
    assert code == 0, out
    tls = step(out, "TLS")[0]
    assert tls.startswith("✓ ") and f"trusted: signed by a CA in ca_file {esx.ca_path}" in tls and "SHA-256 " in tls
    host = step(out, "alpha: ESXi host")[0]
    assert host.startswith(f"✓ {HOST} (host-10) at 127.0.0.11:") and f"TLS name {HOST}" in host, host
    assert "certificate pinned: SHA-256 " in host


# ---------------------------------------------------------------------------------------------- broken steps
def test_nothing_listens_at_the_url(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        code, out = check(tmp_path, f"http://127.0.0.1:{port}")
    assert code == 1
    line, advice = step(out, "URL")
    assert line.startswith(f"✗ cannot connect to 127.0.0.1:{port}: ") and "refused" in line.lower(), line
    assert "port in [vcenter] url" in advice
    assert step(out, "login")[0] == "- not tried: vCenter's address does not answer"


def test_a_wrong_vcenter_password(sim, tmp_path):
    body = config_text(tmp_path, sim.url, "auto", vcenter_extra='password = "not-it"\n')
    done = guestfs_mount("check", "--config", write_private(tmp_path / "c.toml", body))
    line, advice = step(done.stdout, "login")
    assert done.returncode == 1 and line.startswith("✗ as administrator@vsphere.local: vCenter refused the login")
    assert "username and the password it reads" in advice
    assert "not-it" not in done.stdout + done.stderr
    assert step(done.stdout, "VMs")[0].startswith("- not tried")


def test_a_wrong_guest_login(sim, tmp_path):
    vms = '[vms.default]\nusername = "root"\npassword = "guess"\n'
    code, out = check(tmp_path, sim.url, vms=vms)
    line, advice = step(out, "alpha: guest login")
    assert code == 1 and line.startswith("✗ as root: InvalidGuestLogin"), out
    assert advice.startswith("check username and password of [vms.default]")
    assert step(out, "alpha: listing")[0] == "- not tried: the guest login failed"


@pytest.mark.parametrize("broken, words, advice", [
    ("off", "✗ powered off", "power it on"),
    ("tools", "✗ powered on, but VMware Tools is not running (guest operations not ready)",
     "start VMware Tools in the guest"),
])
def test_a_vm_that_is_off_or_has_no_tools(sim, tmp_path, broken, words, advice):
    if broken == "off":
        sim.power("alpha", "poweredOff")
    else:
        sim.tools("alpha", False)
    code, out = check(tmp_path, sim.url, "--vm", "alpha")
    line, what = step(out, "alpha: VM")
    assert code == 1 and line == words and what.startswith(advice), out
    assert step(out, "alpha: download")[0].startswith("- not tried")
    # without --vm, the first VM of the table that can be tried is taken instead
    code, out = check(tmp_path, sim.url, label="d")
    assert code == 0 and step(out, "beta: download")[0].startswith("✓ "), out


def test_no_vm_of_a_login_table_is_on(sim, tmp_path):
    for vm in ("alpha", "beta", "win01"):
        sim.power(vm, "poweredOff")
    code, out = check(tmp_path, sim.url)
    assert code == 1
    assert step(out, "credentials")[0] == "! [vms.default]: none of its 3 VMs is powered on: its login is not tried"
    line, advice = step(out.split("its login is not tried")[1], "credentials")
    assert line == "✗ no powered-on VM to try a guest login on" and "--vm NAME" in advice


def test_an_unknown_vm_and_a_vm_with_no_login_table(sim, tmp_path):
    vms = '[vms."alpha"]\nusername = "root"\npassword = "vmware"\n'
    code, out = check(tmp_path, sim.url, "--vm", "nosuch", "--vm", "beta", vms=vms)
    assert code == 1
    assert step(out, "nosuch: VM") == ("✗ not in vCenter's inventory (or not visible to this user)",
                                       "VM names are the inventory names vCenter shows, case included")
    line, advice = step(out, "beta: credentials")
    assert line.startswith("✗ no guest credentials for VM 'beta': add a [vms.\"beta\"] (or [vms.default]) table")


def test_an_unresolvable_esxi_host_with_transfer_host_name(esx, tmp_path):
    code, out = check(tmp_path, esx.url, vcenter=f'ca_file = "{esx.ca_path}"\ntransfer_host = "name"\n')
    assert code == 1
    line, advice = step(out, "alpha: ESXi host")
    assert line.startswith("✗ download of /motd on vm-1: ESXi host esx01.sim.invalid (host-10) at esx01.sim.invalid:")
    assert "does not resolve from here" in line
    assert advice.startswith('set [vcenter] transfer_host = "management-ip"')
    assert step(out, "alpha: download")[0] == "- not tried: the ESXi host could not be reached"


def test_a_rest_download_needs_modify(sim, tmp_path):
    sim.withhold("Modify")
    code, out = check(tmp_path, sim.url, "--json", api="rest")
    doc = json.loads(out)
    download = next(s for s in doc["steps"] if s["id"] == "download")
    assert code == 1 and download["status"] == "fail", out
    assert download["privileges"] == [MODIFY]
    assert download["advice"].startswith(f"grant the vCenter user {MODIFY} (Guest operation modifications)")
    # VI/JSON reads with Query alone; only --write needs Modify there
    code, out = check(tmp_path, sim.url, "--write", label="vi")
    assert code == 1 and step(out, "alpha: download")[0].startswith("✓ "), out
    line, advice = step(out, "alpha: upload")
    assert line.startswith("✗ a temporary file: NoPermission") and MODIFY in line
    assert advice.startswith(f"grant the vCenter user {MODIFY}")


def test_a_listing_needs_query(sim, tmp_path):
    sim.withhold("Query")
    code, out = check(tmp_path, sim.url)
    line, advice = step(out, "alpha: listing")
    assert code == 1 and line.startswith("✗ /: NoPermission") and QUERY in line, out
    assert advice.startswith(f"grant the vCenter user {QUERY} (Guest operation queries)")
    assert step(out, "alpha: guest login")[0] == "- not tried: vCenter refused the call before the guest saw it"


def test_exec_true_needs_execute(sim, tmp_path):
    vms = '[vms.default]\nusername = "root"\npassword = "vmware"\nexec = true\n'
    code, out = check(tmp_path, sim.url, vms=vms)
    assert code == 0 and step(out, "alpha: guest programs")[0].startswith("✓ /bin/ln --version ran"), out
    sim.withhold("Execute")
    code, out = check(tmp_path, sim.url, "--vm", "alpha", "--vm", "win01", vms=vms, label="d")
    line, advice = step(out, "alpha: guest programs")
    assert code == 1 and line.startswith("✗ /bin/ln --version: /bin/ln may not be run in the guest") and EXECUTE in line
    assert advice.startswith(f"grant the vCenter user {EXECUTE}") and "drop exec = true from [vms.default]" in advice
    assert step(out, "win01: guest programs")[0].startswith("! exec = true does nothing in a Windows guest")


def test_an_untrusted_certificate(esx, tmp_path):
    code, out = check(tmp_path, esx.url)
    line, advice = step(out, "TLS")
    assert code == 1 and line.startswith("✗ ") and "not trusted by the system's CAs" in line, out
    assert advice.startswith(f"run `guestfs-mount trust {esx.url}`") and 'thumbprint = "sha256:' in advice
    assert step(out, "API")[0] == "- not tried: vCenter's certificate is not trusted"


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("old")
    (tmp / "vms/alpha").mkdir(parents=True)
    with running_simulator(tmp / "vms", log_path=tmp / "sim.log", extra_args=["--vc-version", "7.0.1"]) as sim:
        yield sim


@pytest.mark.parametrize("api", ["vi-json", "rest"])
def test_a_vcenter_too_old_for_the_dialect(old, tmp_path, api):
    code, out = check(tmp_path, old.url, api=api)
    assert code == 1
    if api == "vi-json":
        line, advice = step(out, "API")
        assert line.startswith("✗ offered: ") and "vi-json" not in line.split(";")[0] and "rest" in line, line
        assert line.endswith('; chosen: vi-json (api = "vi-json")') and advice.startswith('set [vcenter] api = "auto"')
        assert step(out, "vCenter")[0].startswith("✗ this vCenter has no VI/JSON API (vCenter 8.0U1 and later")
    else:
        assert step(out, "login")[0] == "✓ as administrator@vsphere.local"
        assert step(out, "vCenter")[0].startswith("✗ VMware vCenter Server 7.0.1.00000 build 0: vCenter 7.0.1 "
                                                  "(7.0.1.00000) is older than 7.0U2")


def test_a_config_error_is_one_line_and_exit_2(tmp_path):
    config = write_private(tmp_path / "c.toml", '[vcenter]\nurl = "https://vc.example"\nusername = "u"\n'
                                                'password = "p"\nthumbprint = "sha1:AB"\n')
    done = guestfs_mount("check", "--config", config)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"guestfs-mount: config file {config}: [vcenter] thumbprint must be the SHA-256")

