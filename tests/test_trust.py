"""Trusting vCenter without turning verification off (issue 19): `guestfs-mount trust URL` against the simulator's
TLS (its `/certs/download.zip`), `[vcenter] thumbprint` through `check`, the client and a real mount, and the
pieces underneath (the zip layouts real vCenters serve, the config key's forms, OpenSSL's subject hash)."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import shutil
import ssl
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme

from guestfs_mount.config import ConfigError, load
from guestfs_mount.vsphere.certificates import NotACertificateZip, read_download_zip
from guestfs_mount.vsphere.faults import ConnectionFailed
from guestfs_mount.vsphere.guestfiles import ClientConfig, open_client
from guestfs_mount.vsphere.model import GuestCredentials
from guestfs_mount.vsphere.pinning import fingerprint
from tests.helpers.commands import REPO, guestfs_mount
from tests.helpers.configmount import config_text, failed_start, mounted_with, write_private
from tests.helpers.simulator import running_simulator

OTHER = "AA:" * 31 + "AA"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A TLS vCenter whose transfer URLs name `*` (the server called): the thumbprint pins those too."""
    tmp = tmp_path_factory.mktemp("tls")
    (tmp / "vms/alpha").mkdir(parents=True)
    (tmp / "vms/alpha/motd").write_text("welcome\n")
    with running_simulator(tmp / "vms", log_path=tmp / "sim.log", tls=True) as sim:
        yield sim


def presented(url: str) -> str:
    """SHA-256 of the certificate the server presents, as fingerprints are written."""
    parts = urlsplit(url)
    return fingerprint(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((parts.hostname, parts.port))))


def trust(*args, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "guestfs_mount", "trust", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=env, stdin=stdin)


def check(tmp: Path, sim, vcenter: str) -> subprocess.CompletedProcess:
    body = config_text(tmp, sim.url, "auto", vcenter_extra='password = "vmware"\n' + vcenter)
    return guestfs_mount("check", "--config", write_private(tmp / "check.toml", body))


def line_of(out: str, title: str) -> str:
    """A step's line without its title: "✓ text"."""
    for line in out.splitlines():
        mark, _, rest = line.partition(" ")
        if rest.startswith(f"{title}: "):
            return f"{mark} {rest[len(title) + 2:]}"
    raise AssertionError(f"no step {title!r} in:\n{out}")


# ---------------------------------------------------------------------------------------------- trust
def test_trust_yes_writes_the_roots_and_they_work_as_ca_file(tls, tmp_path):
    out = tmp_path / "etc/vcenter-ca.pem"
    done = trust(tls.url, "--out", out, "--yes")
    assert done.returncode == 0, done.stderr
    sha = presented(tls.url)
    assert f'thumbprint = "sha256:{sha}"' in done.stdout  # ready to paste
    assert "download.zip holds 2 root certificates:" in done.stdout
    roots = [line for line in done.stdout.splitlines() if line.strip()[:2] in ("1.", "2.")]
    assert all(r.strip()[3:].startswith("certs/lin/") for r in roots) and len(roots) == 2, roots
    assert [r.endswith("(it signed the certificate above)") for r in roots].count(True) == 1, roots
    assert "(EXPIRED)" in done.stdout  # the previous root a renewed vCenter still serves
    ca = Path(tls.ca_path).read_text()
    assert fingerprint(ssl.PEM_cert_to_DER_cert(ca)) in done.stdout  # the simulator's CA, by its SHA-256
    assert "the certificate 127.0.0.1 presents verifies (chain and name)" in done.stdout
    assert f'ca_file = "{out}"' in done.stdout
    pem = out.read_text()
    assert pem.count("BEGIN CERTIFICATE") == 2 and ssl.PEM_cert_to_DER_cert(ca) in [
        ssl.PEM_cert_to_DER_cert(p + "-----END CERTIFICATE-----\n") for p in pem.split("-----END CERTIFICATE-----\n")[:-1]]
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    checked = check(tmp_path, tls, f'ca_file = "{out}"\n')
    assert checked.returncode == 0, checked.stdout
    assert f"trusted: signed by a CA in ca_file {out}" in line_of(checked.stdout, "TLS")
    assert line_of(checked.stdout, "alpha: download").startswith("✓ /motd: 8 bytes")


def test_trust_asks_on_a_terminal_and_refuses_without_one(tls, tmp_path):
    out = tmp_path / "ca.pem"
    done = trust(tls.url, "--out", out)  # stdin is /dev/null: no terminal, no --yes
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.strip().splitlines() == [
        f"guestfs-mount: not writing {out}: there is no terminal to confirm on; compare the fingerprints above, "
        f"then run again with --yes"]
    assert "SHA-256" in done.stdout  # shown all the same, to compare
    for answer, written in ((b"n\n", False), (b"y\n", True)):
        primary, secondary = pty.openpty()
        try:
            os.write(primary, answer)
            done = trust(tls.url, "--out", out, stdin=secondary)
        finally:
            os.close(primary)
            os.close(secondary)
        assert f"Write them to {out}" in done.stdout
        assert (done.returncode, out.exists()) == ((0, True) if written else (1, False)), done


def test_trust_of_an_esxi_host_shows_its_thumbprint_and_writes_nothing(tmp_path):
    (tmp_path / "vms/vm1").mkdir(parents=True)
    with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log", tls=True, extra_args=["--esxi"]) as esxi:
        done = trust(esxi.url, "--out", tmp_path / "ca.pem", "--yes")
        sha = presented(esxi.url)
    assert done.returncode == 1 and not (tmp_path / "ca.pem").exists()
    assert f'thumbprint = "sha256:{sha}"' in done.stdout
    assert "/certs/download.zip answered HTTP 404 (only a vCenter serves its root CAs there" in done.stderr


def test_trust_wants_https(tmp_path):
    done = trust("http://127.0.0.1:1")
    assert done.returncode == 2 and "trust wants vCenter's https:// URL" in done.stderr


# ---------------------------------------------------------------------------------------------- thumbprint
def test_a_right_thumbprint_works_without_ca_file_and_a_wrong_one_is_refused_naming_both(tls, tmp_path):
    sha = presented(tls.url)
    done = check(tmp_path, tls, f'thumbprint = "sha256:{sha.lower()}"\n')
    assert done.returncode == 0, done.stdout
    assert line_of(done.stdout, "TLS").endswith("trusted: pinned by [vcenter] thumbprint")
    # the transfer URL names `*`, vCenter itself: pinned to the same certificate
    assert f"certificate pinned: SHA-256 {sha}" in line_of(done.stdout, "alpha: ESXi host")
    assert line_of(done.stdout, "alpha: download").startswith("✓ /motd")
    done = check(tmp_path, tls, f'thumbprint = "{OTHER}"\n')
    tls_line = line_of(done.stdout, "TLS")
    assert done.returncode == 1 and tls_line.startswith("✗ ") and sha in tls_line and OTHER in tls_line


async def test_the_api_client_refuses_another_certificate_naming_both(tls):
    sha = presented(tls.url)
    config = ClientConfig(url=tls.url, username=tls.vc_user, password=tls.vc_password, thumbprint=OTHER)
    with pytest.raises(ConnectionFailed) as e:
        async with open_client(config):
            pass
    assert f"presented SHA-256 {sha}, thumbprint is {OTHER}" in str(e.value)
    right = ClientConfig(url=tls.url, username=tls.vc_user, password=tls.vc_password, thumbprint=sha, api="rest")
    async with open_client(right) as client:  # REST too: it learns ESXi hosts through a pinned VI/JSON session
        vm = next(v.id for v in await client.list_vms() if v.name == "alpha")
        async with await client.open_read(vm, GuestCredentials("root", "vmware"), "/motd") as t:
            assert b"".join([c async for c in t.chunks()]) == b"welcome\n"


def test_a_mount_with_a_thumbprint_and_no_ca_file(tls, tmp_path):
    sha = presented(tls.url)
    body = config_text(tmp_path, tls.url, "vi-json", vcenter_extra=f'password = "vmware"\nthumbprint = "{sha}"\n')
    with mounted_with(tmp_path, tls, body) as gm:
        assert (gm.mp / "alpha/motd").read_text() == "welcome\n"
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    body = config_text(wrong, tls.url, "vi-json", vcenter_extra=f'password = "vmware"\nthumbprint = "{OTHER}"\n')
    done = failed_start(wrong, body)
    assert done.returncode == 1 and f"presented SHA-256 {sha}, thumbprint is {OTHER}" in done.stderr, done.stderr


@pytest.mark.parametrize("given", ["sha256:{}", "SHA256:{}", "{}", "{nocolons}", "sha256:{lower}"])
def test_thumbprint_forms(tmp_path, given):
    digits = hashlib.sha256(b"x").hexdigest().upper()
    colons = ":".join(digits[i:i + 2] for i in range(0, 64, 2))
    text = given.format(colons, nocolons=digits, lower=colons.lower())
    config = write_private(tmp_path / "c.toml", f'[vcenter]\nurl = "https://vc.example"\nusername = "u"\n'
                                                f'password = "p"\nthumbprint = "{text}"\n')
    assert load(config).vcenter["thumbprint"] == colons


@pytest.mark.parametrize("extra, words", [
    ('thumbprint = "sha256:' + "AB:" * 19 + 'AB"', "must be the SHA-256 fingerprint"),  # a SHA-1 one
    ('thumbprint = "sha256:' + "AB:" * 31 + 'AB"\ninsecure = true', "contradict each other"),
])
def test_thumbprint_mistakes(tmp_path, extra, words):
    config = write_private(tmp_path / "c.toml", f'[vcenter]\nurl = "https://vc.example"\nusername = "u"\n'
                                                f'password = "p"\n{extra}\n')
    with pytest.raises(ConfigError, match=words):
        load(config)
    config.write_text(f'[vcenter]\nurl = "http://sim:1"\nusername = "u"\npassword = "p"\nthumbprint = "{OTHER}"\n')
    with pytest.raises(ConfigError, match="pins the certificate of an https:// vCenter"):
        load(config)


# ---------------------------------------------------------------------------------------------- the zip
def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_download_zip_layouts():
    """6.5+ (lin, mac, win: the same roots three times, CRLs beside them), 6.0 (all in certs/), DER in win."""
    a, b = trustme.CA(), trustme.CA()
    pa, pb = a.cert_pem.bytes(), b.cert_pem.bytes()
    der_b = ssl.PEM_cert_to_DER_cert(pb.decode())
    modern = read_download_zip(_zip({"certs/lin/1.r0": b"crl", "certs/mac/1.r0": b"crl", "certs/win/1.r0.crl": b"x",
                                     "certs/lin/1.0": pa, "certs/mac/1.0": pa, "certs/win/1.0.crt": pa,
                                     "certs/win/2.0.crt": der_b, "certs/mac/2.0": pb}))
    assert [c.sha256 for c in modern.certificates] == [fingerprint(ssl.PEM_cert_to_DER_cert(p.decode())) for p in (pa, pb)]
    assert modern.crls == 1 and modern.members == ["certs/lin/1.0", "certs/mac/2.0"]
    old = read_download_zip(_zip({"certs/1.0": pa + pb, "certs/1.r0": b"crl"}))
    assert len(old.certificates) == 2 and old.crls == 1
    for bad in (b"<html>not a zip</html>", _zip({"certs/readme.txt": b"hi"}), _zip({"certs/lin/1.0": b"junk"})):
        with pytest.raises(NotACertificateZip):
            read_download_zip(bad)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_simulators_zip_names_are_openssls_subject_hashes(tmp_path):
    from cryptography import x509

    from guestfs_mount.sim.certs import download_zip, subject_hash

    ca = trustme.CA()
    archive = zipfile.ZipFile(io.BytesIO(download_zip(ca.cert_pem.bytes(), ca.private_key_pem.bytes())))
    names = archive.namelist()
    for name in (n for n in names if n.startswith("certs/lin/") and n.endswith(".0")):
        pem = archive.read(name)
        want = subprocess.run(["openssl", "x509", "-hash", "-noout"], input=pem, capture_output=True,
                              check=True).stdout.decode().strip()
        assert name == f"certs/lin/{want}.0" == f"certs/lin/{subject_hash(x509.load_pem_x509_certificate(pem))}.0"
        stem = want
        assert {f"certs/mac/{stem}.0", f"certs/win/{stem}.0.crt"} <= set(names)
    crl = next(n for n in names if n.startswith("certs/lin/") and n.endswith(".r0"))
    assert subprocess.run(["openssl", "crl", "-noout"], input=archive.read(crl), capture_output=True).returncode == 0


def test_a_name_the_certificate_does_not_hold_and_insecure(tls, tmp_path):
    """Reached as 127.0.0.2 (a TCP relay: the certificate names 127.0.0.1 and localhost), the CA verifies the chain
    but not the name: check says so and offers the thumbprint, trust says the roots will not verify it. With
    insecure = true check passes, loudly."""
    from tests.helpers.tcpproxy import TcpProxy

    port = int(tls.url.rsplit(":", 1)[1])
    with TcpProxy(("127.0.0.2", 0), ("127.0.0.1", port)) as proxy:
        url = f"https://127.0.0.2:{proxy.listen_addr[1]}"
        body = config_text(tmp_path, url, "auto", vcenter_extra=f'password = "vmware"\nca_file = "{tls.ca_path}"\n')
        done = guestfs_mount("check", "--config", write_private(tmp_path / "c.toml", body))
        trusted = trust(url, "--out", tmp_path / "ca.pem", "--yes")
        body = config_text(tmp_path, url, "auto", vcenter_extra='password = "vmware"\ninsecure = true\n')
        loud = guestfs_mount("check", "--config", write_private(tmp_path / "i.toml", body))
    tls_line = line_of(done.stdout, "TLS")
    assert done.returncode == 1 and "IP address mismatch" in tls_line, done.stdout
    lines = done.stdout.splitlines()
    advice = lines[lines.index(next(line for line in lines if line.startswith("✗ TLS: "))) + 1]
    assert "the certificate was not made for 127.0.0.2" in advice and 'thumbprint = "sha256:' in advice
    assert trusted.returncode == 0 and "presents does NOT verify: IP address mismatch" in trusted.stdout
    assert loud.returncode == 0, loud.stdout
    assert line_of(loud.stdout, "TLS").startswith("! ") and "NOT VERIFIED (insecure = true)" in loud.stdout
