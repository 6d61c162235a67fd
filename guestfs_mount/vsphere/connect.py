"""`connect(config)`: pick the dialect, log in, hand out a `GuestFiles`, log out at the end."""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

from guestfs_mount.vsphere.guestfiles import ClientConfig, GuestFiles
from guestfs_mount.vsphere.http import make_api_client
from guestfs_mount.vsphere.rest import RestClient
from guestfs_mount.vsphere.soap import SoapClient, speaks_soap
from guestfs_mount.vsphere.vijson import ViJsonClient, speaks_vi_json

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def connect(config: ClientConfig) -> AsyncIterator[GuestFiles]:
    http = make_api_client(config)
    try:
        api, vi_json = config.api, None
        if api == "auto":
            # SOAP before REST: its listings carry every attribute, and it is all a standalone ESXi host speaks
            vi_json = await speaks_vi_json(http)
            api = "vi-json" if vi_json else "soap" if await speaks_soap(http) else "rest"
            log.info("vCenter %s: using the %s API", config.url, api)
        if api == "rest":
            client: GuestFiles = RestClient(config, http, vi_json=vi_json)
        else:
            client = {"vi-json": ViJsonClient, "soap": SoapClient}[api](config, http)
        await client.start()
    except BaseException:
        await http.aclose()
        raise
    try:
        yield client
    finally:
        await client.aclose()


