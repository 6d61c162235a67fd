"""The simulated ESXi hosts: each has an inventory name (what vCenter's transfer URLs name), a management address
(where its own transfer socket listens) and, with --tls, its own certificate. VMs run on one host and migrate
(vMotion) to another. Shared state: every API encoding shows the same hosts.

`net_config()` gives `HostConfigInfo.virtualNicManagerInfo.netConfig` as vim data objects (dicts with
`_typeName`), the form both the VI/JSON and the SOAP encodings render: one management vmknic whose selected key
names the candidate, as pyVmomi's VirtualNicManagerNetConfig declares it (`selectedVnic` links by key).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

FIRST_HOST_NUMBER = 10  # host-10, host-11, ...


@dataclass
class Host:
    id: str  # HostSystem moref value
    name: str  # inventory name (HostSystem.name), as transfer URLs give it
    address: str  # management IP: this host's transfer socket (the vCenter's own when it is the listen address)
    cert_pem: str | None = None  # config.certificate (with --tls)
    thumbprint: str | None = None  # summary.config.sslThumbprint: SHA-1 "AB:CD:..."


def parse_hosts(spec: str) -> list[tuple[str, str]]:
    """`--hosts esx01.example=127.0.0.11,esx02.example=127.0.0.12` -> [(name, address)]; ValueError when bad."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--hosts wants NAME=ADDRESS[,NAME=ADDRESS...], got {item!r}")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"--hosts: {address!r} is not an IP address (the host's management address)") from None
        out.append((name, address))
    if len({n for n, _ in out}) != len(out) or len({a for _, a in out}) != len(out):
        raise ValueError("--hosts: names and addresses must differ between hosts")
    if not out:
        raise ValueError("--hosts needs at least one NAME=ADDRESS")
    return out


class Hosts:
    """The hosts, in the order given; the first is where a VM runs unless `.vms.json` or a migration says else."""

    def __init__(self, specs: list[tuple[str, str]], first_id: str = f"host-{FIRST_HOST_NUMBER}"):
        """`first_id`: the first host's moref value (a standalone ESXi host is `ha-host`, and the only one)."""
        self._lock = threading.Lock()
        self.all = [Host(first_id if i == 0 else f"host-{FIRST_HOST_NUMBER + i}", name, address)
                    for i, (name, address) in enumerate(specs)]

    @property
    def first(self) -> Host:
        return self.all[0]

    def by_id(self, host_id: str | None) -> Host | None:
        return next((h for h in self.all if h.id == host_id), None)

    def find(self, key: str | None) -> Host | None:
        """A host by id or by name."""
        return next((h for h in self.all if key in (h.id, h.name)), None)

    def by_name(self, name: str | None) -> Host | None:
        return next((h for h in self.all if h.name == name), None)

    def placement(self, index: int) -> str:
        """Where the index-th VM starts: round robin over the hosts."""
        return self.all[index % len(self.all)].id

    def next_after(self, host_id: str) -> Host:
        ids = [h.id for h in self.all]
        i = ids.index(host_id) if host_id in ids else -1
        return self.all[(i + 1) % len(self.all)]


def net_config(host: Host) -> list[dict]:
    """HostVirtualNicManagerInfo.netConfig: a management vmknic (vmk0) with the host's address, selected."""
    key = "management.key-vim.host.VirtualNic-vmk0"
    vnic = {
        "_typeName": "HostVirtualNic",
        "device": "vmk0",
        "key": key,
        "portgroup": "Management Network",
        "spec": {
            "_typeName": "HostVirtualNicSpec",
            "ip": {"_typeName": "HostIpConfig", "dhcp": False, "ipAddress": host.address,
                   "subnetMask": "255.0.0.0"},
            "mac": "00:50:56:00:00:01",
            "mtu": 1500,
        },
    }
    return [
        {"_typeName": "VirtualNicManagerNetConfig", "nicType": "management", "multiSelectAllowed": True,
         "candidateVnic": [vnic], "selectedVnic": [key]},
        {"_typeName": "VirtualNicManagerNetConfig", "nicType": "vmotion", "multiSelectAllowed": True,
         "candidateVnic": [{**vnic, "key": "vmotion.key-vim.host.VirtualNic-vmk0"}]},
    ]
