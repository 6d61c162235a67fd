"""`GET /certs/download.zip`: vCenter's trusted root certificates, as a real vCenter (6.5 and later) lays them out
(VMware KB 2108294, and what admins' unzip listings show):

    certs/lin/<hash>.0      a root CA certificate, PEM          certs/lin/<hash>.r0      that CA's CRL, PEM
    certs/mac/<hash>.0      the same                            certs/mac/<hash>.r0      the same
    certs/win/<hash>.0.crt  the same                            certs/win/<hash>.r0.crl  the same

`<hash>` is OpenSSL's subject name hash (`openssl x509 -hash`, the names `c_rehash` gives), so `certs/lin` can be
used as an OpenSSL CA directory. Here the roots are the simulator's CA (which signed vCenter's certificate) with its
CRL, and an older root that signs nothing any more, as a vCenter whose VMCA root was renewed still serves.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(x) for x in dotted.split("."))
    body = bytearray([first * 40 + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def subject_hash(cert: x509.Certificate) -> str:
    """OpenSSL's X509_NAME_hash: SHA-1 of the name's canonical encoding (each string value as UTF8String, trimmed,
    inner whitespace runs made one space, ASCII lower-cased; the RDN sets without the outer SEQUENCE), its first
    four bytes read little-endian."""
    canon = b""
    for rdn in cert.subject.rdns:
        avas = []
        for attribute in rdn:
            value = " ".join(str(attribute.value).split()).lower() if isinstance(attribute.value, str) else ""
            value = "".join(c.lower() if c.isascii() else c for c in value)
            avas.append(_der(0x30, _oid(attribute.oid.dotted_string) + _der(0x0C, value.encode())))
        canon += _der(0x31, b"".join(sorted(avas)))
    return f"{int.from_bytes(hashlib.sha1(canon).digest()[:4], 'little'):08x}"


def _crl(ca_cert: x509.Certificate, ca_key) -> bytes:
    now = datetime.now(timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(ca_cert.subject)
           .last_update(now - timedelta(days=1))
           .next_update(now + timedelta(days=365))
           .sign(ca_key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM)


def _old_root() -> bytes:
    """A root CA that expired: what a vCenter keeps serving after its VMCA root was renewed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA"),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "vsphere"),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "local"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "guestfs-sim (previous root)")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=3650)).not_valid_after(now - timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def download_zip(ca_cert_pem: bytes, ca_key_pem: bytes) -> bytes:
    """The zip for the CA that signed vCenter's certificate (its certificate and key, PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    files: list[tuple[str, bytes]] = []
    for pem, crl in ((ca_cert_pem, _crl(ca_cert, ca_key)), (_old_root(), None)):
        name = subject_hash(x509.load_pem_x509_certificate(pem))
        if crl is not None:
            files += [(f"certs/lin/{name}.r0", crl), (f"certs/mac/{name}.r0", crl), (f"certs/win/{name}.r0.crl", crl)]
        files += [(f"certs/lin/{name}.0", pem), (f"certs/mac/{name}.0", pem), (f"certs/win/{name}.0.crt", pem)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return out.getvalue()
