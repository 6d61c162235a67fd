"""What the client knows of ESXi hosts, whatever the dialect: which host a VM runs on, each host's inventory name,
management address and certificate, and what a transfer URL becomes: the address to connect to, the TLS name to
send and the one certificate to accept.

Through vCenter a transfer URL names the VM's ESXi host by its inventory name, which often does not resolve from
the client; govmomi (guest/file_manager.go, TransferURL) then uses the host's one management IP
(`config.virtualNicManagerInfo.netConfig`) and trusts the certificate vCenter reports for the host whatever
address is used. A `*` host means "the server you called": the API connection's host and port.

A dialect plugs in with one function, a `PropertyReader`: `await read(mo_type, mo_id, paths)` returns the
properties it could read as `{path: value}`, values decoded to plain Python as VI/JSON's `unbox()` gives them:
data objects as dicts keyed by vim property names, arrays as lists, a MoRef as `{"type": ..., "value": ...}`,
`xsd:byte[]` as bytes, a list of (signed) ints or base64 text. The properties read are `runtime.host` of a
VirtualMachine and `name`, `config.certificate`, `config.virtualNicManagerInfo.netConfig` of a HostSystem.

Keys: the pin is looked up by the host the transfer URL names. A name not seen yet makes us read the VM's host
again (a migration moved it), then that host's properties; a failed lookup is tried again at the next transfer.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Literal, Sequence
from urllib.parse import urlsplit, urlunsplit

import trio

from guestfs_mount.vsphere.faults import ProtocolError, VSphereError
from guestfs_mount.vsphere.pinning import fingerprint

log = logging.getLogger(__name__)

TransferHost = Literal["management-ip", "name", "vcenter"]
TRANSFER_HOSTS: tuple[str, ...] = ("management-ip", "name", "vcenter")
PropertyReader = Callable[[str, str, Sequence[str]], Awaitable[dict[str, Any]]]

VM_HOST_PROPERTY = "runtime.host"
HOST_PROPERTIES = ("name", "config.certificate", "config.virtualNicManagerInfo.netConfig")


@dataclass(frozen=True)
class HostInfo:
    """One ESXi host as vCenter reports it."""

    id: str  # HostSystem moref value, e.g. host-10
    name: str | None = None  # inventory name (HostSystem.name): what transfer URLs name
    management_ips: tuple[str, ...] = ()
    certificate: bytes | None = None  # DER of config.certificate

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.certificate) if self.certificate else None

    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class Route:
    """Where one transfer goes. `url` has the address to connect to; `sni` is the TLS server name to send when the
    address is not the URL's own host name; `pin` is the SHA-256 fingerprint of the only certificate accepted
    (None: the API connection's verification); `host` names the ESXi host in messages."""

    url: str
    sni: str | None = None
    pin: str | None = None
    host: str = ""
    host_id: str | None = None

    @property
    def address(self) -> str:
        return urlsplit(self.url).netloc


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def with_netloc(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))


def resolve_star(url: str, api_url: str) -> str:
    """A transfer URL whose host is `*` points at the server the API call went to: its host *and port* (govmomi:
    "also use Client's port, to support port forwarding"); any other URL is returned as it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProtocolError(f"vCenter returned a transfer URL that is not http(s): {parts.scheme or 'no scheme'}")
    if parts.hostname != "*":
        return url
    return with_netloc(url, urlsplit(api_url).netloc)


def certificate_der(value: Any) -> bytes | None:
    """HostConfigInfo.certificate (PEM text as bytes: a signed int8 list in VI/JSON, base64 in SOAP) -> DER."""
    raw: bytes | None = None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, list) and all(isinstance(b, int) for b in value):
        raw = bytes(b & 0xFF for b in value)
    elif isinstance(value, str):
        if "-----BEGIN" in value:
            raw = value.encode("ascii", "replace")
        else:
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error:
                return None
    if not raw:
        return None
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            return ssl.PEM_cert_to_DER_cert(raw.decode("ascii", "replace").strip())
        except ValueError:
            return None
    return raw if raw[:1] == b"\x30" else None  # DER starts with a SEQUENCE


def management_ips(net_config: Any) -> tuple[str, ...]:
    """The IP addresses of the selected management vmknics (govmomi's HostSystemManagementIPs). `selectedVnic`
    links candidates by key (pyVmomi: F_LINK); a list of objects with `key` is accepted too."""
    ips = []
    for nc in net_config if isinstance(net_config, list) else []:
        if not isinstance(nc, dict) or nc.get("nicType") != "management":
            continue
        selected = {s if isinstance(s, str) else s.get("key") for s in nc.get("selectedVnic") or []
                    if isinstance(s, (str, dict))}
        for vnic in nc.get("candidateVnic") or []:
            if not isinstance(vnic, dict) or vnic.get("key") not in selected:
                continue
            ip = ((vnic.get("spec") or {}).get("ip") or {}).get("ipAddress")
            if isinstance(ip, str) and is_ip(ip) and ip not in ips:
                ips.append(ip)
    return tuple(ips)


def _moref_value(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("value"), str):
        return value["value"]
    return value if isinstance(value, str) else None


def _expiry(der: bytes) -> datetime | None:
    """The certificate's notAfter when it is past (or notBefore when in the future), else None."""
    try:
        from cryptography import x509
    except ImportError:  # only the warning needs it
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    now = datetime.now(timezone.utc)
    if cert.not_valid_after_utc < now:
        return cert.not_valid_after_utc
    if cert.not_valid_before_utc > now:
        return cert.not_valid_before_utc
    return None


class EsxiHosts:
    """Host knowledge for one vCenter connection, filled on demand through `reader` (None: the dialect cannot
    learn hosts, as REST alone cannot: transfer URLs are then used by name and verified like the API connection).
    """

    def __init__(self, api_url: str, policy: str = "management-ip", reader: PropertyReader | None = None,
                 api_pin: str | None = None):
        self.api_url = api_url
        self.api_pin = api_pin  # [vcenter] thumbprint: the server we called presents exactly that certificate
        self.policy = policy
        self.reader = reader
        self._vm_host: dict[str, str] = {}
        self._hosts: dict[str, HostInfo] = {}
        self._by_name: dict[str, str] = {}  # a name (or IP) transfer URLs gave -> host id
        self._lock = trio.Lock()
        self._warned: set[str] = set()

    def note_vm_host(self, vm: str, host_id: str | None) -> None:
        """What an inventory listing said about where a VM runs (a first guess; a URL may prove it stale)."""
        if host_id:
            self._vm_host[vm] = host_id

    async def route(self, vm: str, url: str) -> Route:
        """Where a transfer URL from an initiate call on `vm` should go, and what to trust there."""
        parts = urlsplit(resolve_star(url, self.api_url))
        if urlsplit(url).hostname == "*":
            # the server we called (ESXi answering directly): trusted as the API connection is
            pin = self.api_pin if parts.scheme == "https" else None
            return Route(parts.geturl(), host=parts.hostname or "", pin=pin)
        name = parts.hostname or ""
        info = await self._host_for(vm, name) if self.reader is not None else None
        address = self._address(info, name, parts.port)
        sni = name if address != parts.netloc and not is_ip(name) else None
        pin = info.fingerprint if info is not None and parts.scheme == "https" else None
        if info is not None and parts.scheme == "https" and pin is None:
            self._once(f"nocert:{info.id}", logging.WARNING, "vCenter reports no certificate for ESXi host %s: its "
                       "transfers are verified like vCenter's connection", info.label())
        return Route(with_netloc(parts.geturl(), address), sni=sni, pin=pin, host=info.label() if info else name,
                     host_id=info.id if info else None)

    def forget(self, host_id: str | None) -> None:
        """Drop what we know of a host (its certificate was refused: vCenter may know a renewed one by now)."""
        info = self._hosts.pop(host_id or "", None)
        if info is not None:
            self._by_name = {k: v for k, v in self._by_name.items() if v != info.id}

    def _address(self, info: HostInfo | None, name: str, port: int | None) -> str:
        if self.policy == "vcenter":
            return urlsplit(self.api_url).netloc
        if self.policy == "management-ip" and not is_ip(name):
            ips = info.management_ips if info else ()
            if len(ips) == 1:
                return _netloc(ips[0], port)
            if info is not None and self.reader is not None:
                self._once(f"ips:{info.id}", logging.INFO,
                           "ESXi host %s has %s management addresses: transfers go to its name",
                           info.label(), len(ips) or "no")
        return _netloc(name, port)

    async def _host_for(self, vm: str, name: str) -> HostInfo | None:
        """The host a URL naming `name` belongs to: known by that name, else the VM's host read again."""
        host_id = self._by_name.get(name.lower())
        if host_id in self._hosts:
            return self._hosts[host_id]
        async with self._lock:  # one lookup at a time; those waiting find its result
            host_id = self._by_name.get(name.lower())
            if host_id in self._hosts:
                return self._hosts[host_id]
            try:
                info = await self._learn(vm, name)
            except VSphereError as e:
                self._once(f"fail:{name}", logging.WARNING,
                           "cannot learn ESXi host %s of VM %s from vCenter (%s): its transfers go to it by name, "
                           "verified like vCenter's connection; tried again at the next transfer", name, vm, e)
                return None
            self._warned.discard(f"fail:{name}")
            self._by_name[name.lower()] = info.id
            return info

    async def _learn(self, vm: str, name: str) -> HostInfo:
        guess = self._vm_host.get(vm)
        if guess is not None:
            info = await self._describe(guess)
            if _matches(info, name):
                return info
        # an unknown name, or the host we knew for the VM has another: the VM moved (vMotion, DRS); ask again
        props = await self._read("VirtualMachine", vm, [VM_HOST_PROPERTY])
        host_id = _moref_value(props.get(VM_HOST_PROPERTY))
        if host_id is None:
            raise ProtocolError(f"vCenter gave no runtime.host for VM {vm}")
        self._vm_host[vm] = host_id
        info = self._hosts.get(host_id) if host_id != guess else None
        return info or await self._describe(host_id, fresh=True)

    async def _describe(self, host_id: str, fresh: bool = False) -> HostInfo:
        if not fresh and host_id in self._hosts:
            return self._hosts[host_id]
        props = await self._read("HostSystem", host_id, list(HOST_PROPERTIES))
        der = certificate_der(props.get("config.certificate"))
        name = props.get("name") if isinstance(props.get("name"), str) else None
        info = HostInfo(host_id, name, management_ips(props.get("config.virtualNicManagerInfo.netConfig")), der)
        self._hosts[host_id] = info
        if name:
            self._by_name[name.lower()] = host_id
        for ip in info.management_ips:
            self._by_name.setdefault(ip, host_id)
        if der is not None:
            when = _expiry(der)
            if when is not None:
                self._once(f"expired:{host_id}:{info.fingerprint}", logging.WARNING,
                           "ESXi host %s: its certificate is outside its dates (%s); accepted because it is exactly "
                           "the one vCenter reports for the host (SHA-256 %s)", info.label(),
                           when.strftime("%Y-%m-%d"), info.fingerprint)
        return info

    async def _read(self, mo_type: str, mo_id: str, paths: list[str]) -> dict[str, Any]:
        assert self.reader is not None
        props = await self.reader(mo_type, mo_id, paths)
        if not isinstance(props, dict):
            raise ProtocolError(f"unexpected answer from vCenter: properties of {mo_type} {mo_id}")
        return props

    def _once(self, key: str, level: int, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, message, *args)


def _matches(info: HostInfo, name: str) -> bool:
    return (info.name or "").lower() == name.lower() or name in info.management_ips
