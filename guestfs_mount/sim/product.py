"""What the simulator presents itself as: a vCenter (the default) or a standalone ESXi host (`--esxi`).

The two differ in their AboutInfo (`apiType` VirtualCenter / HostAgent) and in the ids of the fixed managed objects
(ESXi's are the `ha-*` names hostd uses; its VMs are numbered `1`, `2`, ...). A client must take every id from the
ServiceContent and the inventory, never assume one.
"""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "8.0.3.0"


@dataclass(frozen=True)
class Product:
    about: dict  # AboutInfo
    root_folder: str
    datacenter: str
    datacenter_name: str
    vm_folder: str
    host: str  # the first (on ESXi the only) HostSystem's id
    property_collector: str
    view_manager: str
    session_manager: str
    search_index: str
    guest_operations_manager: str
    file_manager: str
    process_manager: str
    vm_id_prefix: str

    @property
    def esxi(self) -> bool:
        return self.about["apiType"] == "HostAgent"

    def about_of(self, version: str) -> dict:
        """AboutInfo for the version the simulator reports (--vc-version); apiVersion is its 4-part release."""
        return {**self.about, "version": version, "fullName": f"{self.about['name']} {version} build-0 (guestfs-sim)",
                "apiVersion": ".".join((version.split(".") + ["0"] * 4)[:4])}


def _about(**kw) -> dict:
    return {
        "_typeName": "AboutInfo",
        "vendor": "VMware, Inc.",
        "version": "8.0.3",
        "build": "0",
        "localeVersion": "INTL",
        "localeBuild": "000",
        "apiVersion": API_VERSION,
        **kw,
    }


VCENTER = Product(
    about=_about(
        name="VMware vCenter Server",
        fullName="VMware vCenter Server 8.0.3 build-0 (guestfs-sim)",
        osType="linux-x64",
        productLineId="vpx",
        apiType="VirtualCenter",
        instanceUuid="00000000-0000-0000-0000-000000000001",
        licenseProductName="VMware VirtualCenter Server",
        licenseProductVersion="8.0",
    ),
    root_folder="group-d1",
    datacenter="datacenter-2",
    datacenter_name="Datacenter",
    vm_folder="group-v3",
    host="host-10",
    property_collector="propertyCollector",
    view_manager="ViewManager",
    session_manager="SessionManager",
    search_index="SearchIndex",
    guest_operations_manager="guestOperationsManager",
    file_manager="guestOperationsFileManager",
    process_manager="guestOperationsProcessManager",
    vm_id_prefix="vm-",
)

ESXI = Product(
    about=_about(
        name="VMware ESXi",
        fullName="VMware ESXi 8.0.3 build-0 (guestfs-sim)",
        osType="vmnix-x86",
        productLineId="embeddedEsx",
        apiType="HostAgent",
        licenseProductName="VMware ESX Server",
        licenseProductVersion="8.0",
    ),
    root_folder="ha-folder-root",
    datacenter="ha-datacenter",
    datacenter_name="ha-datacenter",
    vm_folder="ha-folder-vm",
    host="ha-host",
    property_collector="ha-property-collector",
    view_manager="ViewManager",
    session_manager="ha-sessionmgr",
    search_index="ha-searchindex",
    guest_operations_manager="ha-guest-operations-manager",
    file_manager="ha-guest-operations-file-manager",
    process_manager="ha-guest-operations-process-manager",
    vm_id_prefix="",
)
