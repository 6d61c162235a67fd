"""`guestfs-mount trust URL [--out FILE] [--yes]`: show the certificate a vCenter presents and the root CAs it serves
at `/certs/download.zip`, and write those roots as a PEM file for `[vcenter] ca_file` once the admin has compared
the fingerprints and said yes (or passed --yes). Nothing is trusted before that: the download itself is not
verified, which is why the fingerprints are shown. Also prints the `thumbprint = "sha256:..."` line that pins the
presented certificate instead.

Exit codes: 0 written, 1 not written (declined, no terminal to ask on, nothing to fetch), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import trio

from guestfs_mount.config import default_config_paths
from guestfs_mount.vsphere.certificates import (CertificateInfo, NotACertificateZip, fetch_download_zip,
                                                presented_certificate, read_download_zip, verification_failure)

TIMEOUT = 15.0


def default_out(host: str) -> Path:
    """Beside the config file a mount of this user reads: /etc/guestfs-mount for root, else ~/.config/..."""
    user_dir, system_dir = (p.parent for p in default_config_paths())
    return (system_dir if os.geteuid() == 0 else user_dir) / f"{host.replace(':', '_')}-ca.pem"


def describe(cert: CertificateInfo, indent: str = "  ") -> list[str]:
    state = " (EXPIRED)" if cert.days_left() < 0 else " (not yet valid)" if cert.outside_dates() else ""
    return [f"{indent}subject  {cert.subject}",
            f"{indent}issuer   {'(itself: a self-signed root)' if cert.self_signed else cert.issuer}",
            f"{indent}SHA-256  {cert.sha256}",
            f"{indent}SHA-1    {cert.sha1}",
            f"{indent}valid    {cert.dates()}{state}"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount trust",
        description="Fetch the root CA certificates a vCenter serves (/certs/download.zip), show their subjects and "
                    "fingerprints, and write them as a PEM file for [vcenter] ca_file after you confirm.",
    )
    parser.add_argument("url", help="vCenter's URL (https://vcenter.example.com) or host name")
    parser.add_argument("--out", metavar="FILE", help="where to write the PEM file (default: <host>-ca.pem beside "
                                                      "the config: /etc/guestfs-mount for root, else "
                                                      "~/.config/guestfs-mount)")
    parser.add_argument("--yes", action="store_true", help="write without asking (compare the fingerprints first)")
    args = parser.parse_args(argv)
    url = args.url if "://" in args.url else f"https://{args.url}"
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        print(f"guestfs-mount: trust wants vCenter's https:// URL, not {args.url!r}", file=sys.stderr)
        return 2
    host, port = parts.hostname, parts.port or 443
    base = f"https://{parts.netloc}"
    out = Path(args.out) if args.out else default_out(host)
    return trio.run(_trust, base, host, port, out, args.yes)


async def _trust(base: str, host: str, port: int, out: Path, yes: bool) -> int:
    try:
        presented = CertificateInfo.from_der(await presented_certificate(host, port, TIMEOUT))
    except (OSError, trio.TooSlowError, ValueError) as e:
        print(f"guestfs-mount: no TLS certificate from {host}:{port}: {e or type(e).__name__}", file=sys.stderr)
        return 1
    print(f"{host}:{port} presents this certificate (not verified yet):")
    print("\n".join(describe(presented)))
    print(f'  to pin exactly this certificate instead of trusting a CA, set in [vcenter]:\n'
          f'    thumbprint = "{presented.thumbprint_setting}"')
    try:
        roots = read_download_zip(await fetch_download_zip(base, TIMEOUT))
    except NotACertificateZip as e:
        print(f"guestfs-mount: no root CAs from {base}: {e}; the thumbprint line above pins the certificate "
              f"instead", file=sys.stderr)
        return 1
    print(f"\n{base}/certs/download.zip holds {len(roots.certificates)} root certificate"
          f"{'' if len(roots.certificates) == 1 else 's'}:")
    for i, (cert, member) in enumerate(zip(roots.certificates, roots.members), 1):
        signer = " (it signed the certificate above)" if cert.signed(presented) else ""
        print(f"  {i}. {member}{signer}")
        print("\n".join(describe(cert, "     ")))
    pem = "".join(cert.pem() for cert in roots.certificates)
    failure = await _verifies(pem, host, port)
    if failure is None:
        print(f"\nWith these as ca_file, the certificate {host} presents verifies (chain and name).")
    else:
        print(f"\nWith these as ca_file, the certificate {host} presents does NOT verify: {failure}.\n"
              f"Pin it with the thumbprint line above instead, or use the host name its certificate names.")
    print("Compare the SHA-256 fingerprints with vCenter's own (vSphere Client: Administration > Certificates > "
          "Certificate Management > Trusted Root Certificates) before trusting them.")
    if not yes:
        if not sys.stdin.isatty():
            print(f"guestfs-mount: not writing {out}: there is no terminal to confirm on; compare the fingerprints "
                  f"above, then run again with --yes", file=sys.stderr)
            return 1
        answer = (await trio.to_thread.run_sync(_ask, f"Write {'them' if len(roots.certificates) > 1 else 'it'} to "
                                                    f"{out}{' (replacing it)' if out.exists() else ''}? [y/N] "))
        if answer not in ("y", "yes"):
            print(f"not written: {out}")
            return 1
    try:
        _write(out, pem)
    except OSError as e:
        print(f"guestfs-mount: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f'wrote {out}. In the config\'s [vcenter] table:\n    ca_file = "{out}"')
    return 0


def _ask(question: str) -> str:
    try:
        return input(question).strip().lower()
    except EOFError:
        return ""


async def _verifies(pem: str, host: str, port: int) -> str | None:
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        try:
            return await verification_failure(host, port, TIMEOUT, ca_file=f.name)
        except (OSError, trio.TooSlowError) as e:
            return f"cannot connect again ({e})"


def _write(out: Path, pem: str) -> None:
    """Atomically, mode 0644 (certificates are public), the directory made if missing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
