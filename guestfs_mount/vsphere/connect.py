"""`connect(config)`: pick the dialect, log in, hand out a `GuestFiles`, log out at the end."""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

import httpx

from guestfs_mount.vsphere.guestfiles import ClientConfig, GuestFiles
from guestfs_mount.vsphere.http import connection_error, make_api_client
from guestfs_mount.vsphere.rest import RestClient
from guestfs_mount.vsphere.soap import SoapClient, speaks_soap
from guestfs_mount.vsphere.vijson import RELEASE, ViJsonClient

log = logging.getLogger(__name__)


async def speaks_vi_json(http: httpx.AsyncClient) -> bool:
    """VI/JSON exists when ServiceInstance content answers with a ServiceContent (vCenter 8.0U1+)."""
    try:
        response = await http.get(f"/sdk/vim25/{RELEASE}/ServiceInstance/ServiceInstance/content")
    except httpx.HTTPError as e:
        raise connection_error(e, "contacting vCenter") from None
    if response.status_code != 200:
        return False
    try:
        return response.json().get("_typeName") == "ServiceContent"
    except (ValueError, AttributeError):
        return False


@contextlib.asynccontextmanager
async def connect(config: ClientConfig) -> AsyncIterator[GuestFiles]:
    http = make_api_client(config)
    try:
        api = config.api
        if api == "auto":
            # SOAP before REST: its listings carry every attribute, and it is all a standalone ESXi host speaks
            api = "vi-json" if await speaks_vi_json(http) else "soap" if await speaks_soap(http) else "rest"
            log.info("vCenter %s: using the %s API", config.url, api)
        client = {"vi-json": ViJsonClient, "soap": SoapClient, "rest": RestClient}[api](config, http)
        await client.start()
    except BaseException:
        await http.aclose()
        raise
    try:
        yield client
    finally:
        await client.aclose()


