"""`connect(config)`: pick the dialect, log in, hand out a `GuestFiles`, log out at the end.

`DIALECTS` lists every dialect in the order `api = "auto"` prefers them, each with its probe (one request without a
session: does this vCenter speak it?). The mount asks the probes in that order until one answers (the last is taken
without asking); `guestfs-mount check` asks them all (`offered_dialects`) to show what a vCenter offers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator, Awaitable, Callable

import httpx

from guestfs_mount.vsphere.base import DialectClient
from guestfs_mount.vsphere.guestfiles import ClientConfig, GuestFiles
from guestfs_mount.vsphere.http import connection_error, make_api_client
from guestfs_mount.vsphere.rest import RestClient
from guestfs_mount.vsphere.soap import SoapClient, speaks_soap
from guestfs_mount.vsphere.vijson import ViJsonClient, speaks_vi_json

log = logging.getLogger(__name__)


async def speaks_rest(http: httpx.AsyncClient) -> bool:
    """The Automation REST API exists when `/api/session` answers a vAPI body (401 without a session; vCenter 7.0+;
    its guest file operations need 7.0U2, which the client checks after the login)."""
    try:
        response = await http.get("/api/session")
    except httpx.HTTPError as e:
        raise connection_error(e, "contacting vCenter") from None
    if response.status_code not in (200, 401, 403):
        return False
    try:
        return isinstance(response.json(), (dict, str))
    except ValueError:
        return False


Probe = Callable[[httpx.AsyncClient], Awaitable[bool]]
# name, probe, client class; the order is `api = "auto"`'s preference
DIALECTS: list[tuple[str, Probe, type[DialectClient]]] = [
    ("vi-json", speaks_vi_json, ViJsonClient),
    # SOAP before REST: its listings carry every attribute, and it is all a standalone ESXi host speaks
    ("soap", speaks_soap, SoapClient),
    ("rest", speaks_rest, RestClient),
]


async def first_offered(http: httpx.AsyncClient) -> tuple[str, dict[str, bool]]:
    """`api = "auto"`: the first dialect whose probe answers, the last one without asking; and what was learnt."""
    known: dict[str, bool] = {}
    for name, probe, _ in DIALECTS[:-1]:
        known[name] = await probe(http)
        if known[name]:
            return name, known
    return DIALECTS[-1][0], known


async def offered_dialects(http: httpx.AsyncClient) -> dict[str, bool]:
    """Every dialect's probe, in the order of preference."""
    return {name: await probe(http) for name, probe, _ in DIALECTS}


def make_client(config: ClientConfig, http: httpx.AsyncClient, api: str, known: dict[str, bool]) -> DialectClient:
    """The client of dialect `api` over `http` (not started); `known`: what the probes said."""
    cls = next(cls for name, _, cls in DIALECTS if name == api)
    if cls is RestClient:
        # it learns ESXi hosts through VI/JSON, else SOAP
        return RestClient(config, http, vi_json=known.get("vi-json"))
    return cls(config, http)


@contextlib.asynccontextmanager
async def connect(config: ClientConfig) -> AsyncIterator[GuestFiles]:
    http = make_api_client(config)
    try:
        api, known = config.api, {}
        if api == "auto":
            api, known = await first_offered(http)
            log.info("vCenter %s: using the %s API", config.url, api)
        client = make_client(config, http, api, known)
        await client.start()
    except BaseException:
        await http.aclose()
        raise
    try:
        yield client
    finally:
        await client.aclose()
