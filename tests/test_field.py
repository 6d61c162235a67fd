"""Real vCenters in the field (issue 16), on real mounts: the simulator reproduces each behaviour with an option,
the mount (the real command line, client and FUSE) is driven with real programs.

1 compressed transfer bodies; 2 ESXi names that do not resolve (`transfer_host`); 3 vMotion moves the pin;
4 expired self-signed ESXi certificates (pinned by SHA-256, warned once); 5 REST learns pins through VI/JSON, and
needs ca_file without it; 6 `*` is the API's host and port; 7 REST inventories above the VM-list limit; 8 old
vCenters refused in one line; 9 listings whose pages skip entries; 10 tolerant parsing (REST permission and time
forms, a new session id, symlink records); 11 missing vCenter privileges.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.helpers.badserver import Answer
from tests.helpers.configmount import child_env, config_text, failed_start, mounted_with
from tests.helpers.lyingproxy import lying_proxy
from tests.helpers.simulator import running_simulator
from tests.helpers.tcpproxy import TcpProxy

APIS = ["vi-json", "soap", "rest"]
HOSTS = "esx01.sim.invalid=127.0.0.11,esx02.sim.invalid=127.0.0.12"


def run(*cmd, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def sim_for(tmp: Path, *args, tls=False, vms=("vm1",)):
    root = tmp / "vms"
    for name in vms:
        (root / name).mkdir(parents=True, exist_ok=True)
    with running_simulator(root, log_path=tmp / "sim.log", tls=tls, extra_args=list(args)) as sim:
        yield sim


@contextlib.contextmanager
def mount(tmp: Path, sim, api: str, label: str, vcenter: str = "", extra_args=(), url: str | None = None):
    """A mount of its own (config, log, spool under tmp/label); `vcenter` adds lines to [vcenter]."""
    sub = tmp / label
    sub.mkdir()
    ca = f'ca_file = "{sim.ca_path}"\n' if sim.ca_path else ""
    body = config_text(sub, url or sim.url, api, vcenter_extra='password = "vmware"\n' + ca + vcenter)
    with mounted_with(sub, sim, body, api, extra_args=extra_args) as gm:
        yield gm


# ---------------------------------------------------------------------------------------------- 1
@pytest.mark.parametrize("api", APIS)
def test_1_transfer_bodies_compressed_anyway_are_decoded(tmp_path, api):
    data = os.urandom(200_000) + b"z" * 300_000
    with sim_for(tmp_path, "--transfer-gzip", "always") as sim:
        (sim.root / "vm1/big.bin").write_bytes(data)
        (sim.root / "vm1/small.txt").write_text("hello\n")
        with mount(tmp_path, sim, api, "m") as gm:
            assert (gm.vm / "big.bin").read_bytes() == data
            assert run("cat", gm.vm / "small.txt").stdout == "hello\n"
            assert os.stat(gm.vm / "big.bin").st_size == len(data)
    gets = [line for line in (tmp_path / "sim.log").read_text().splitlines() if "op=guestFile.GET" in line]
    assert len(gets) == 2 and all("-> 200 gzip" in line for line in gets), gets


# ---------------------------------------------------------------------------------------------- 2, 3, 4
@pytest.fixture(scope="module")
def esx(tmp_path_factory):
    """A TLS vCenter with two ESXi hosts whose names do not resolve, each at its own address with its own
    self-signed certificate, expired a year ago; VM alpha on esx01, beta on esx02."""
    tmp = tmp_path_factory.mktemp("esx")
    with sim_for(tmp, "--hosts", HOSTS, "--host-cert-expired", tls=True, vms=("alpha", "beta")) as sim:
        for vm in ("alpha", "beta"):
            for name in ("a.txt", "b.txt"):
                (sim.root / vm / name).write_text(f"{name} on {vm}\n")
        yield sim


@pytest.mark.parametrize("api, policy, works", [
    ("vi-json", None, True), ("vi-json", "name", False), ("vi-json", "vcenter", True), ("soap", None, True),
    ("rest", None, True)])
def test_2_transfer_host_names_that_do_not_resolve(esx, tmp_path, api, policy, works):
    """Transfer URLs name esx01.sim.invalid: the default goes to its management address, "vcenter" to vCenter's
    (sending the host's name for TLS, as an SNI-routing proxy wants), both pinned to the host's certificate;
    "name" fails with the host named and what to do."""
    setting = f'transfer_host = "{policy}"\n' if policy else ""
    with mount(tmp_path, esx, api, "m", vcenter=setting) as gm:
        done = run("cat", gm.mp / "alpha/a.txt")
        log = gm.log()
    if works:
        assert done.returncode == 0 and done.stdout == "a.txt on alpha\n", (done, log[-2000:])
        return
    assert done.returncode == 1 and "Transport endpoint is not connected" in done.stderr, done
    port = esx.url.rsplit(":", 1)[1]
    assert re.search(rf"WARNING .*download of alpha/a.txt failed: .*ESXi host esx01.sim.invalid \(host-10\) at "
                     rf"esx01.sim.invalid:{port}: .*does not resolve from here.*management-ip", log), log


@pytest.mark.parametrize("api", APIS)
def test_3_4_vmotion_moves_the_pin_and_expired_certificates_are_pinned(esx, tmp_path, api):
    """beta runs on esx02; it moves to esx01 between two reads and an upload. The URLs then name esx01, which the
    mount has not seen for beta: it asks vCenter where beta runs now and pins esx01's certificate. Both hosts'
    certificates expired a year ago: accepted by SHA-256, one warning per host."""
    with mount(tmp_path, esx, api, "m") as gm:
        assert run("cat", gm.mp / "beta/a.txt").stdout == "a.txt on beta\n"
        esx.migrate("beta", "esx01.sim.invalid")
        try:
            again = run("cat", gm.mp / "beta/b.txt")
            (tmp_path / "local").write_text("written after the move\n")
            copied = run("cp", tmp_path / "local", gm.mp / "beta/c.txt")
            again2 = run("cat", gm.mp / "alpha/b.txt")
        finally:
            esx.migrate("beta", "esx02.sim.invalid")
        log = gm.log()
    assert again.returncode == 0 and again.stdout == "b.txt on beta\n", (again, log[-3000:])
    assert copied.returncode == 0, (copied, log[-3000:])
    assert (esx.root / "beta/c.txt").read_text() == "written after the move\n"
    assert again2.stdout == "b.txt on alpha\n"
    assert "not the one vCenter reports" not in log
    for host in ("esx01.sim.invalid (host-10)", "esx02.sim.invalid (host-11)"):
        warnings = re.findall(rf"WARNING .*ESXi host {re.escape(host)}: its certificate is outside its dates "
                              rf"\(\d{{4}}-\d\d-\d\d\); accepted because it is exactly the one vCenter reports", log)
        assert len(warnings) == 1, (host, log)
    (esx.root / "beta/c.txt").unlink()


# ---------------------------------------------------------------------------------------------- 5
def test_5_rest_without_vi_json_learns_esxi_certificates_through_soap(tmp_path):
    """vCenter 8.0.0 speaks REST but not VI/JSON: the REST mount learns the ESXi certificates through the same
    vCenter's SOAP API, so with vCenter trusted through the system store (SSL_CERT_FILE) and no ca_file it works,
    pinned. Only where neither vim25 API answers (here a proxy that passes /api alone) is there nothing to learn
    them from: the mount refuses in one line saying so."""
    # the host's own self-signed certificate is trusted by nothing but a pin
    with sim_for(tmp_path, "--vc-version", "8.0.0", "--hosts", "esx01.sim.invalid=127.0.0.11", tls=True) as sim:
        (sim.root / "vm1/f").write_text("via REST\n")
        sub = tmp_path / "soap"
        sub.mkdir()
        body = config_text(sub, sim.url, "rest", vcenter_extra='password = "vmware"\n')
        with mounted_with(sub, sim, body, "rest", env=child_env(SSL_CERT_FILE=sim.ca_path)) as gm:
            sim.reset_stats()
            assert run("cat", gm.vm / "f").stdout == "via REST\n"
            stats = sim.stats()
        assert stats.get("RetrievePropertiesEx", 0) >= 1, stats  # the host's certificate, read over SOAP
        assert "transfers go to ESXi hosts by name" not in gm.log()

        other = trustme.CA()
        proxy_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        other.issue_cert("127.0.0.2", "localhost").configure_cert(proxy_tls)
        other_ca = tmp_path / "proxy-ca.pem"
        other.cert_pem.write_to_path(str(other_ca))
        with lying_proxy(sim.url, tls=proxy_tls, upstream_ca=sim.ca_path) as proxy:
            proxy.lie("/sdk", Answer(404, b"<html>no such page</html>", "text/html"))
            body = config_text(tmp_path, proxy.url, "rest", vcenter_extra='password = "vmware"\n')
            done = failed_start(tmp_path, body, env=child_env(SSL_CERT_FILE=str(other_ca)))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done
    assert "REST API cannot tell which certificate an ESXi host presents" in lines[0]
    assert "neither VI/JSON nor SOAP" in lines[0]
    assert "set ca_file" in lines[0] and "insecure = true" in lines[0]


# ---------------------------------------------------------------------------------------------- 6
def test_6_star_is_the_api_connections_host_and_port(tmp_path):
    """ESXi's transfer URLs carry `*` and no port; behind a port forward (the mount talks to a proxy on another
    port) transfers must go where the API calls go."""
    with sim_for(tmp_path, "--no-transfer-port") as sim:
        (sim.root / "vm1/f").write_text("through the forward\n")
        port = int(sim.url.rsplit(":", 1)[1])
        with TcpProxy(("127.0.0.1", 0), ("127.0.0.1", port)) as proxy:
            url = f"http://127.0.0.1:{proxy.listen_addr[1]}"
            for api in APIS:
                with mount(tmp_path, sim, api, api, url=url) as gm:
                    assert run("cat", gm.vm / "f").stdout == "through the forward\n"
                    assert run("cp", "/etc/hostname", gm.vm / f"up-{api}").returncode == 0
            transfers = proxy.counts["transfer"]
    assert (sim.root / "vm1/up-rest").read_bytes() == Path("/etc/hostname").read_bytes()
    assert transfers == 2 * len(APIS)  # a GET and a PUT per dialect, all through the forwarded port


# ---------------------------------------------------------------------------------------------- 7
def test_7_rest_inventories_above_the_vm_list_limit(tmp_path):
    """The REST VM list refuses more than --rest-vm-limit matches (4,000 on a real vCenter): the mount lists host
    by host, and with --vm asks by name."""
    vms = ("v1", "v2", "v3", "v4", "v5")
    with sim_for(tmp_path, "--rest-vm-limit", "2", "--hosts", "a.sim.invalid=127.0.0.21,b.sim.invalid=127.0.0.22,"
                 "c.sim.invalid=127.0.0.23", vms=vms) as sim:
        with mount(tmp_path, sim, "rest", "all") as gm:
            listed = sorted(os.listdir(gm.mp))
            stats = sim.stats()
            log = gm.log()
        sim.reset_stats()
        with mount(tmp_path, sim, "rest", "named", extra_args=("--vm", "v2", "--vm", "v4")) as gm:
            named = sorted(os.listdir(gm.mp))
            named_stats = sim.stats()
    assert listed == list(vms) and stats["vcenter.host.list"] >= 1, (listed, stats)
    assert "listing them host by host" in log
    assert named == ["v2", "v4"] and "vcenter.host.list" not in named_stats, named_stats


# ---------------------------------------------------------------------------------------------- 8
def test_8_old_vcenters_are_reached_through_soap_and_the_other_dialects_refused_in_one_line(tmp_path):
    with sim_for(tmp_path, "--vc-version", "7.0.1") as sim:
        (sim.root / "vm1/f").write_text("7.0U1 through SOAP\n")
        with mount(tmp_path, sim, "auto", "old") as gm:
            assert run("cat", gm.vm / "f").stdout == "7.0U1 through SOAP\n"
            assert "using the soap API" in gm.log()
        rest = failed_start(tmp_path, config_text(tmp_path, sim.url, "rest", vcenter_extra='password = "vmware"\n'))
        vi = failed_start(tmp_path, config_text(tmp_path, sim.url, "vi-json", vcenter_extra='password = "vmware"\n'))
    with sim_for(tmp_path, "--vc-version", "7.0.2") as sim:
        (sim.root / "vm1/f").write_text("7.0U2 is enough\n")
        with mount(tmp_path, sim, "rest", "m") as gm:  # (`auto` takes SOAP there: its listings carry more)
            assert run("cat", gm.vm / "f").stdout == "7.0U2 is enough\n"
            assert "(rest dialect)" in gm.log()
    for done, words in ((rest, ["vCenter 7.0.1 (7.0.1.00000) is older than 7.0U2", 'api = "soap"']),
                        (vi, ["no VI/JSON API", 'api = "soap"'])):
        errors = [line for line in done.stderr.strip().splitlines() if " ERROR " in line]
        assert done.returncode == 1 and len(errors) == 1, done
        assert all(w in errors[0] for w in words), errors


# ---------------------------------------------------------------------------------------------- 9
@pytest.mark.parametrize("api", APIS)
def test_9_listings_whose_pages_skip_entries(tmp_path, api):
    """The agent leaves out entries it cannot read but counts them (--skip-unreadable: chmod 000 files). With
    pages of 4, one whole page is left out and another in part: every readable name shows exactly once."""
    with sim_for(tmp_path, "--skip-unreadable") as sim:
        d = sim.root / "vm1/d"
        d.mkdir()
        for i in range(14):
            (d / f"f{i:02}").write_text(str(i))
        order = os.listdir(d)  # the agent's (directory) order
        unreadable = order[2:6] + order[8:9]  # VI positions 4-7 (after . and ..) and 10; REST 2-5 and 8
        for name in unreadable:
            os.chmod(d / name, 0)
        with mount(tmp_path, sim, api, "m", vcenter="list_page_size = 4\n") as gm:
            listed = run("ls", "-1", "-f", gm.vm / "d").stdout.split()
            calls = sim.stats()["ListFilesInGuest"]
    shown = [n for n in listed if n not in (".", "..")]
    assert sorted(shown) == sorted(set(order) - set(unreadable)) and len(shown) == len(set(shown)), listed
    assert calls >= 4  # pages of 4 over 16 (VI) or 14 (REST) positions, repeats included


# ---------------------------------------------------------------------------------------------- 10
@pytest.mark.parametrize("api", APIS)
def test_10_tolerant_parsing(tmp_path, api):
    """REST permissions printed as st_mode ("100640") and times with milliseconds; symlinks, which the agent
    reports with their target's attributes (zeros when dangling), shown as links; VI/JSON: a new session id
    handed out with an answer is used from then on, with no new login."""
    with sim_for(tmp_path, "--rest-permissions", "100644") as sim:
        guest = sim.root / "vm1"
        (guest / "f").write_text("data\n")
        os.chmod(guest / "f", 0o640)
        os.symlink("f", guest / "link")
        os.symlink("nowhere/at/all", guest / "dangling")
        (guest / "later").mkdir()
        (guest / "later/g").write_text("after the new id\n")
        with mount(tmp_path, sim, api, "m") as gm:
            f = os.stat(gm.vm / "f")
            link, dangling = os.lstat(gm.vm / "link"), os.lstat(gm.vm / "dangling")
            readlinks = (os.readlink(gm.vm / "link"), os.readlink(gm.vm / "dangling"))
            linked = (gm.vm / "link").read_text()
            touched = run("touch", "-d", "@1600000000", gm.vm / "f")
            if api == "vi-json":
                sim.reset_stats()
                sim.rotate_sessions()
                assert os.listdir(gm.vm / "later") == ["g"]
                assert (gm.vm / "later/g").read_text() == "after the new id\n"
                logins = sim.stats().get("Login", 0)
                log = gm.log()
    assert stat.S_IMODE(f.st_mode) == 0o640 and f.st_size == 5
    assert stat.S_ISLNK(link.st_mode) and stat.S_IMODE(link.st_mode) == 0o777 and link.st_size == 1
    assert stat.S_ISLNK(dangling.st_mode) and stat.S_IMODE(dangling.st_mode) == 0o777
    assert dangling.st_size == len("nowhere/at/all") and readlinks == ("f", "nowhere/at/all")
    assert linked == "data\n"
    assert touched.returncode == 0 and os.stat(guest / "f").st_mtime == 1600000000
    if api == "vi-json":
        assert logins == 0 and "vCenter gave a new session id" in log


# ---------------------------------------------------------------------------------------------- 11
@pytest.mark.parametrize("api", APIS)
def test_11_missing_privileges_name_the_privilege(tmp_path, api):
    """Without GuestOperations.Modify a REST download is refused (VI/JSON needs only Query); an upload is refused
    in both; without Query nothing can be looked up. Each is EACCES with a log line naming the privilege."""
    with sim_for(tmp_path) as sim:
        for name in ("f", "g", "h"):
            (sim.root / "vm1" / name).write_text(f"{name}\n")
        with mount(tmp_path, sim, api, "m") as gm:
            os.listdir(gm.vm)  # the records are cached: what follows needs only the transfer
            sim.withhold("Modify")
            read = run("cat", gm.vm / "g")
            wrote = run("cp", "/etc/hostname", gm.vm / "new")
            sim.withhold("Query")
            looked = run("stat", gm.vm / "not-cached")
            sim.withhold()
            log = gm.log()
    modify = "VirtualMachine.GuestOperations.Modify"
    if api == "rest":
        assert read.returncode == 1 and "Permission denied" in read.stderr, read
        assert re.search(f"WARNING .*download of vm1/g failed: .*{modify}", log), log
    else:
        assert read.returncode == 0 and read.stdout == "g\n", read
    assert wrote.returncode == 1 and "Permission denied" in wrote.stderr, wrote
    assert re.search(f"ERROR .*upload of vm1/new failed .*{modify}", log), log
    assert looked.returncode == 1 and "Permission denied" in looked.stderr, looked  # (lookups are not logged)
    assert not (sim.root / "vm1/new").exists()
