"""Certificates for --tls, made at start: a throwaway CA and one leaf for vCenter (and the default host), and a
self-signed certificate per simulated ESXi host (`--hosts`), as a freshly installed ESXi host makes for itself."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trustme


def sha1_thumbprint(pem: str) -> str:
    """`summary.config.sslThumbprint` form: SHA-1 of the DER certificate, "AB:CD:..."."""
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def make_tls(names: list[str], ca_dir: Path) -> tuple[ssl.SSLContext, str, str, str, bytes]:
    """Returns (server context, CA PEM path, leaf certificate PEM, leaf SHA-1 thumbprint "AB:CD:...", the
    `/certs/download.zip` that serves the CA)."""
    from .certs import download_zip

    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    ca_path = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    leaf_pem = leaf.cert_chain_pems[0].bytes().decode()
    return (ctx, str(ca_path), leaf_pem, sha1_thumbprint(leaf_pem),
            download_zip(ca.cert_pem.bytes(), ca.private_key_pem.bytes()))


def host_certificate(name: str, address: str, directory: Path, expired: bool = False) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for one simulated ESXi host (its name and management address), expired a year
    ago when `expired` (a lab host nobody renewed). Returns (server context, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # EC: fast enough to make several per start
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(days=730), now - timedelta(days=365)) if expired else (now - timedelta(days=1),
                                                                                          now + timedelta(days=365))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                    x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_text(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, pem
