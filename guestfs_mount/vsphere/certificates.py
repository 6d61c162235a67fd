"""vCenter's certificates as an admin meets them before trusting them: the one a server presents (fetched without
verifying it), what each says (subject, issuer, fingerprints, dates), whether a trust setting verifies it, and the
root CAs vCenter serves at `/certs/download.zip` ("Download trusted root CA certificates" on its start page).

The zip's layout (VMware KB 2108294; vCenter 6.5 and later): `certs/lin/<hash>.0` one PEM certificate per file,
named by OpenSSL's subject hash as `c_rehash` does, `certs/lin/<hash>.r0` the CA's CRL; the same files under
`certs/mac/`, and under `certs/win/` as `<hash>.0.crt` and `<hash>.r0.crl`; vCenter 6.0 put them all in `certs/`.
The three folders hold the same certificates: every `.0`/`.crt`/`.pem` member is read (PEM or DER), duplicates
dropped by fingerprint, CRLs counted and left out. Nothing is written to disk while reading it.
"""

from __future__ import annotations

import io
import ssl
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from guestfs_mount.vsphere.pinning import fingerprint, pinned_context

DOWNLOAD_PATH = "/certs/download.zip"
MAX_ZIP = 4 << 20  # a real one is about 10 KB
MAX_MEMBER = 1 << 20
MAX_MEMBERS = 1000
CERT_SUFFIXES = (".0", ".crt", ".pem", ".cer")
CRL_SUFFIXES = (".r0", ".crl")


@dataclass(frozen=True)
class CertificateInfo:
    """One X.509 certificate, as shown to an admin."""

    der: bytes
    subject: str  # RFC 4514: "CN=vc.example.com,C=US"
    issuer: str
    sha256: str  # "AB:CD:..."
    sha1: str
    not_before: datetime
    not_after: datetime
    is_ca: bool

    @classmethod
    def from_der(cls, der: bytes) -> "CertificateInfo":
        cert = x509.load_der_x509_certificate(der)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        return cls(der=der, subject=cert.subject.rfc4514_string() or "(empty)",
                   issuer=cert.issuer.rfc4514_string() or "(empty)", sha256=fingerprint(der),
                   sha1=_colons(cert.fingerprint(hashes.SHA1()).hex()), not_before=cert.not_valid_before_utc,
                   not_after=cert.not_valid_after_utc, is_ca=is_ca)

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    @property
    def thumbprint_setting(self) -> str:
        """What `[vcenter] thumbprint` takes to pin exactly this certificate."""
        return f"sha256:{self.sha256}"

    def pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.der)

    def dates(self) -> str:
        return f"{self.not_before:%Y-%m-%d} to {self.not_after:%Y-%m-%d}"

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(timezone.utc))).total_seconds() / 86400

    def outside_dates(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return not self.not_before <= now <= self.not_after

    def signed(self, other: "CertificateInfo") -> bool:
        """Whether this certificate's key signed `other` (it is `other`'s issuer)."""
        try:
            x509.load_der_x509_certificate(other.der).verify_directly_issued_by(x509.load_der_x509_certificate(self.der))
        except (InvalidSignature, ValueError, TypeError):  # not its issuer, or a key type that cannot tell
            return False
        return True


def _colons(hex_digits: str) -> str:
    digits = hex_digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


# ------------------------------------------------------------------------------------------- a server's certificate
async def _handshake(host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float) -> bytes:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        tls = trio.SSLStream(stream, context, server_hostname=server_name)
        try:
            await tls.do_handshake()
            return tls.getpeercert(binary_form=True) or b""
        except trio.BrokenResourceError as e:
            # trio keeps ssl's own error (a verification failure, a server that does not speak TLS) as the cause
            raise e.__cause__ if isinstance(e.__cause__, OSError) else OSError(f"TLS handshake failed: {e}") from None
        finally:
            await trio.aclose_forcefully(tls)


async def presented_certificate(host: str, port: int, timeout: float, server_name: str | None = None) -> bytes:
    """The DER certificate a TLS server presents, not verified (to be shown, then trusted or not). OSError,
    ssl.SSLError or trio.TooSlowError when there is none to be had."""
    return await _handshake(host, port, pinned_context(), server_name or host, timeout)


async def verification_failure(host: str, port: int, timeout: float, ca_file: str | None = None,
                               server_name: str | None = None) -> str | None:
    """None when a TLS connection verified against `ca_file` (None: the system's CAs), host name included,
    succeeds; else why not, in OpenSSL's words ("self-signed certificate in certificate chain", "Hostname
    mismatch, certificate is not valid for 'x'")."""
    context = ssl.create_default_context(cafile=ca_file)
    try:
        await _handshake(host, port, context, server_name or host, timeout)
    except ssl.SSLCertVerificationError as e:
        return e.verify_message or str(e)
    return None


# ------------------------------------------------------------------------------------------- /certs/download.zip
class NotACertificateZip(Exception):
    """What came is not vCenter's certificate download (an ESXi host, an old vCenter, a proxy's page)."""


@dataclass
class TrustedRoots:
    certificates: list[CertificateInfo]
    crls: int  # CRLs in the zip (left out: a CA file holds certificates)
    members: list[str]  # the file names the certificates came from, in the zip's order


async def fetch_download_zip(url: str, timeout: float) -> bytes:
    """GET URL/certs/download.zip without verifying the server (it is what trusting it will rest on: the admin
    compares fingerprints before anything is written). NotACertificateZip for anything but a zip."""
    target = url.rstrip("/") + DOWNLOAD_PATH
    data = bytearray()
    try:
        async with httpx.AsyncClient(verify=False, timeout=timeout, follow_redirects=True) as http:
            async with http.stream("GET", target) as response:
                if response.status_code != 200:
                    raise NotACertificateZip(f"{target} answered HTTP {response.status_code} (only a vCenter "
                                             f"serves its root CAs there; an ESXi host does not)")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_ZIP:
                        raise NotACertificateZip(f"{target} is larger than {MAX_ZIP >> 20} MiB: not vCenter's zip")
    except httpx.HTTPError as e:
        raise NotACertificateZip(f"cannot fetch {target}: {e or type(e).__name__}") from None
    return bytes(data)


def read_download_zip(data: bytes) -> TrustedRoots:
    """The certificates in vCenter's `download.zip`, each once (the lin, mac and win folders repeat them)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise NotACertificateZip("the answer is not a zip file") from None
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise NotACertificateZip(f"the zip holds {len(infos)} files: not vCenter's")
    # certs/lin first: the folder every reader of this zip uses; the others are the same files again
    infos.sort(key=lambda i: (not i.filename.startswith("certs/lin/"), i.filename))
    found: dict[str, CertificateInfo] = {}
    members: list[str] = []
    crls = 0
    for info in infos:
        name = info.filename.lower()
        if name.endswith(CRL_SUFFIXES):
            crls += 1 if name.startswith("certs/lin/") or "/" not in name.removeprefix("certs/") else 0
            continue
        if not name.endswith(CERT_SUFFIXES) or info.file_size > MAX_MEMBER:
            continue
        with archive.open(info) as member:
            raw = member.read(MAX_MEMBER + 1)
        for der in _certificates_in(raw):
            try:
                cert = CertificateInfo.from_der(der)
            except ValueError:
                continue
            if cert.sha256 not in found:
                found[cert.sha256] = cert
                members.append(info.filename)
    if not found:
        raise NotACertificateZip("the zip holds no certificate")
    return TrustedRoots(list(found.values()), crls, members)


def _certificates_in(raw: bytes) -> list[bytes]:
    """DER certificates in a file: every PEM block, or the file itself when it is DER."""
    text = raw.decode("ascii", "replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        return [raw] if raw[:1] == b"\x30" else []
    ders = []
    for block in text.split("-----BEGIN CERTIFICATE-----")[1:]:
        body, end, _ = block.partition("-----END CERTIFICATE-----")
        if end:
            try:
                ders.append(ssl.PEM_cert_to_DER_cert(f"-----BEGIN CERTIFICATE-----{body}-----END CERTIFICATE-----"))
            except ValueError:
                continue
    return ders
