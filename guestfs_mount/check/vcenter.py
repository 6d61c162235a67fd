"""The vCenter half of `guestfs-mount check`: the URL answers, its TLS certificate (and how it is trusted), the
dialects it offers and the one chosen, the login, what vCenter says it is, and the VM list.

The API connection, the dialect probes and the client are the mount's own (`vsphere.http.make_api_client`,
`vsphere.connect.DIALECTS`): a dialect added there shows up here without code of its own.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import trio

from guestfs_mount.check.advice import grant, missing_privileges
from guestfs_mount.check.report import Report
from guestfs_mount.vsphere.base import DialectClient
from guestfs_mount.vsphere.certificates import CertificateInfo, presented_certificate, verification_failure
from guestfs_mount.vsphere.connect import DIALECTS, make_client, offered_dialects
from guestfs_mount.vsphere.faults import AuthenticationError, ConnectionFailed, UnsupportedVCenter, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig
from guestfs_mount.vsphere.http import make_api_client
from guestfs_mount.vsphere.model import VMInfo

EXPIRY_WARNING_DAYS = 30


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


async def url_answers(report: Report, config: ClientConfig) -> bool:
    """A TCP connection to the URL's host and port."""
    host, port = _host_port(config.url)
    try:
        with trio.fail_after(config.connect_timeout):
            addresses = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            stream = await trio.open_tcp_stream(host, port)
    except socket.gaierror as e:
        report.fail("url", f"{host} does not resolve from here ({e.strerror or e})",
                    "check the host name in [vcenter] url and this machine's DNS")
        return False
    except trio.TooSlowError:
        report.fail("url", f"no answer from {host}:{port} within {config.connect_timeout:g} s",
                    f"check that a firewall lets this machine reach vCenter on port {port}")
        return False
    except OSError as e:
        report.fail("url", f"cannot connect to {host}:{port}: {_os_reason(e)}",
                    "check the port in [vcenter] url (vCenter's API is on 443) and that vCenter is up")
        return False
    address = stream.socket.getpeername()[0]
    await stream.aclose()
    shown = f" ({address})" if address != host else ""
    report.ok("url", f"{host}:{port} answers{shown}", details={"host": host, "port": port, "address": address,
                                                                "addresses": sorted({a[4][0] for a in addresses})})
    return True


def _os_reason(e: OSError) -> str:
    """trio's "all attempts to connect failed" keeps the real errors in its cause (an ExceptionGroup)."""
    cause = e.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    reason = cause if isinstance(cause, OSError) else e
    return reason.strerror or str(reason)


async def tls_trusted(report: Report, config: ClientConfig, url: str) -> bool:
    """The certificate vCenter presents, and whether the setting in use ([vcenter] thumbprint, ca_file, the
    system's CAs, insecure) trusts it. False when the API connection cannot work."""
    host, port = _host_port(config.url)
    if urlsplit(config.url).scheme != "https":
        report.warn("tls", "none (http://): passwords and files travel in clear",
                    "a real vCenter is reached with https://; http:// is for the simulator")
        return True
    try:
        cert = CertificateInfo.from_der(await presented_certificate(host, port, config.connect_timeout))
    except (OSError, trio.TooSlowError, ValueError) as e:
        report.fail("tls", f"no TLS certificate from {host}:{port}: {e or type(e).__name__}",
                    "check that the URL is vCenter's (https:// on its API port)")
        return False
    said = f"{cert.subject}, issued by {cert.issuer}; SHA-256 {cert.sha256}; valid {cert.dates()}"
    details = {"subject": cert.subject, "issuer": cert.issuer, "sha256": cert.sha256,
               "not_before": cert.not_before.isoformat(), "not_after": cert.not_after.isoformat()}
    pin = f'thumbprint = "{cert.thumbprint_setting}"'
    if config.thumbprint:
        if cert.sha256 != config.thumbprint:
            report.fail("tls", f"{said}; refused: [vcenter] thumbprint is {config.thumbprint}",
                        "if vCenter's certificate was renewed, compare it with `guestfs-mount trust URL` and set "
                        f"{pin}; else something between here and vCenter answers in its name",
                        details={**details, "trusted_by": None})
            return False
        return _trusted(report, cert, f"{said}; trusted: pinned by [vcenter] thumbprint",
                        {**details, "trusted_by": "thumbprint"})
    if config.insecure:
        report.warn("tls", f"{said}; NOT VERIFIED (insecure = true): anyone on the path can read the passwords",
                    f"set ca_file (`guestfs-mount trust {url}` writes it) or {pin}, and drop insecure",
                    details={**details, "trusted_by": "insecure"})
        return True
    by = f"ca_file {config.ca_file}" if config.ca_file else "the system's CAs"
    failure = await verification_failure(host, port, config.connect_timeout, ca_file=config.ca_file)
    if failure is None:
        return _trusted(report, cert, f"{said}; trusted: signed by a CA in {by}",
                        {**details, "trusted_by": "ca_file" if config.ca_file else "system"})
    if "Hostname mismatch" in failure or "IP address mismatch" in failure:
        advice = (f"the certificate was not made for {host}: use a name it holds in [vcenter] url, or pin it: {pin}")
    else:
        advice = (f"run `guestfs-mount trust {url}`: it shows vCenter's root CAs and writes the ca_file to set; or pin "
                  f"this very certificate: {pin} (compare its SHA-256 with vCenter's first)")
    report.fail("tls", f"{said}; not trusted by {by}: {failure}", advice, details={**details, "trusted_by": None})
    return False


def _trusted(report: Report, cert: CertificateInfo, text: str, details: dict) -> bool:
    if cert.outside_dates():
        report.warn("tls", f"{text}; outside its dates", "renew vCenter's certificate (accepted only because it is "
                    "pinned by thumbprint; a CA-verified one would be refused)", details=details)
    elif cert.days_left() < EXPIRY_WARNING_DAYS:
        report.warn("tls", f"{text}; expires in {cert.days_left():.0f} days", "renew vCenter's certificate before "
                    f"{cert.not_after:%Y-%m-%d} (a renewed one needs a new thumbprint, or the same CA)",
                    details=details)
    else:
        report.ok("tls", text, details=details)
    return True


async def connect_client(report: Report, config: ClientConfig) -> DialectClient | None:
    """The dialects offered and the one chosen, then the client's own start (login, version checks), as the mount
    does it. The started client, or None (closed) when it cannot be used."""
    http = make_api_client(config)
    try:
        known = await offered_dialects(http)
    except VSphereError as e:
        await http.aclose()
        report.fail("api", f"{e}", "check the URL: it must be vCenter's (or an ESXi host's) own address")
        return None
    offered = [name for name, yes in known.items() if yes]
    chosen = config.api if config.api != "auto" else next(iter(offered), DIALECTS[-1][0])
    text = f"offered: {', '.join(offered) or 'none'}; chosen: {chosen} (api = \"{config.api}\")"
    details = {"offered": offered, "chosen": chosen, "setting": config.api}
    if chosen in offered:
        report.ok("api", text, details=details)
    elif offered:
        report.fail("api", text, f'set [vcenter] api = "auto" (or "{offered[0]}")', details=details)
    else:
        report.fail("api", text, "nothing at this URL answers as vCenter's API: check that it is vCenter's address",
                    details=details)
    client = make_client(config, http, chosen, known)
    try:
        await client.start()
    except BaseException as e:
        logged_in = client.logged_in
        await client.aclose()
        if not isinstance(e, Exception):
            raise
        _start_failed(report, config, e, logged_in, client.about)
        return None
    report.ok("login", f"as {config.username}", details={"user": config.username})
    _about(report, client.about)
    return client


def _start_failed(report: Report, config: ClientConfig, e: Exception, logged_in: bool, about: dict) -> None:
    if isinstance(e, AuthenticationError):
        report.fail("login", f"as {config.username}: {e}", "check [vcenter] username and the password it reads "
                    "(password, password_file, password_env or password_credential): the same login must work in "
                    "the vSphere Client")
        report.skip("vcenter", "the login failed")
        return
    if isinstance(e, UnsupportedVCenter):
        if logged_in:
            report.ok("login", f"as {config.username}")
        else:
            report.skip("login", "the chosen API is not there")
        report.fail("vcenter", f"{_describe(about) + ': ' if about else ''}{e}",
                    "the message names the api setting (or the vCenter version) that works", details=about)
        return
    if isinstance(e, ConnectionFailed):
        report.fail("login", f"{e}", "check the network path to vCenter and its certificate (the TLS line)")
    else:
        report.fail("login", str(e) if isinstance(e, VSphereError) else f"{type(e).__name__}: {e}",
                    "see the message; `guestfs-mount check --debug` shows every call")
    report.skip("vcenter", "no session")


def _describe(about: dict) -> str:
    name = about.get("product") or "vCenter"
    version = f" {about['version']}" if about.get("version") else ""
    build = f" build {about['build']}" if about.get("build") else ""
    api = f" (API {about['api_version']})" if about.get("api_version") else ""
    return f"{name}{version}{build}{api}"


def _about(report: Report, about: dict) -> None:
    if about:
        report.ok("vcenter", _describe(about), details=about)
    else:
        report.ok("vcenter", "its version is not readable by this user (the mount does not need it)")


async def list_vms(report: Report, client: DialectClient, named: tuple[str, ...]) -> list[VMInfo] | None:
    try:
        vms = await client.list_vms()
    except VSphereError as e:
        privileges = missing_privileges(e)
        report.fail("vms", f"{e}", grant(privileges, "the VMs") if privileges else
                    "the vCenter user must be able to see the VMs (a role on them or a folder above them)",
                    privileges=privileges)
        return None
    on = [v for v in vms if v.powered_on]
    ready = [v for v in on if v.tools_ready]
    asked = " (asked for by name)" if named and client.dialect == "rest" else ""
    text = f"{len(vms)} VM{'' if len(vms) == 1 else 's'}{asked}: {len(on)} powered on, {len(ready)} with VMware " \
           f"Tools running"
    details = {"count": len(vms), "powered_on": len(on), "tools_running": len(ready)}
    if not vms:
        report.fail("vms", text, "the vCenter user sees no VM: give it a role on the VMs (or a folder above them) "
                    "that includes the Guest operations privileges", details=details)
        return None
    report.ok("vms", text, details=details)
    return vms


async def close(client: DialectClient) -> None:
    with trio.move_on_after(10):
        try:
            await client.aclose()
        except (VSphereError, httpx.HTTPError):
            pass
