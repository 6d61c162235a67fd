"""Certificates for --tls, made at start: a throwaway CA and one leaf that is both vCenter's and the "ESXi host"'s."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import trustme


def make_tls(names: list[str], ca_dir: Path) -> tuple[ssl.SSLContext, str, str, str]:
    """Returns (server context, CA PEM path, leaf certificate PEM, leaf SHA-1 thumbprint "AB:CD:...")."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    ca_path = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    leaf_pem = leaf.cert_chain_pems[0].bytes().decode()
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(leaf_pem)).hexdigest().upper()
    thumbprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return ctx, str(ca_path), leaf_pem, thumbprint
