"""The SOAP dialect (`POST /sdk`, vim25): every vCenter and every standalone ESXi host.

SOAP and VI/JSON are two encodings of one vim25 model (same managed objects, methods, parameters, properties and
faults), so this is VI/JSON's client with another transport: a method call `(mo_type, mo_id, method, params)` becomes
a SOAP envelope (soapcodec.py) and its answer the shapes VI/JSON's `unbox()` gives; a property read becomes a `Fetch`
(as pyVmomi reads `vm.runtime`), the ServiceInstance's content `RetrieveServiceContent`. Listings, transfers, pinning
and every guest call are vijson.py's. The session is the `vmware_soap_session` cookie (docs/client.md).
"""

from __future__ import annotations

import errno
import logging
import re
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree
import httpx

from guestfs_mount.vsphere import soapcodec
from guestfs_mount.vsphere.faultmap import vi_fault_error
from guestfs_mount.vsphere.faults import GuestFileError, ProtocolError, VSphereError
from guestfs_mount.vsphere.guestfiles import ClientConfig
from guestfs_mount.vsphere.http import connection_error, send
from guestfs_mount.vsphere.vijson import ViJsonClient, moref

log = logging.getLogger(__name__)

SDK = "/sdk"
COOKIE = "vmware_soap_session"
NEWEST = (8, 0, 3, 0)  # the newest vim25 version this client was written against; older ones all work
OLDEST = "6.5"  # asked for until the server's version is known (every type used here exists since 5.x)
_SET_COOKIE = re.compile(rf'(?:^|[\s;,]){COOKIE}=("[^"]*"|[^;,\s]*)')


def _version(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in (text or "").strip().split("."))
    except ValueError:
        return None  # "2.5u2server" and the like


def newest_common(versions: list[str | None]) -> str | None:
    """The newest of the server's vim25 versions that is not newer than ours (pyVmomi's choice)."""
    usable = [(v, text.strip()) for text in versions if (v := _version(text)) and v <= NEWEST]
    return max(usable)[1] if usable else None


async def server_versions(http: httpx.AsyncClient) -> list[str]:
    """The vim25 versions in `/sdk/vimServiceVersions.xml` (what SOAP clients read first); [] when not served."""
    try:
        response = await http.get(f"{SDK}/vimServiceVersions.xml", headers={"Accept": "text/xml"})
    except httpx.HTTPError as e:
        raise connection_error(e, "contacting the server") from None
    if response.status_code != 200:
        return []
    try:
        root = defusedxml.ElementTree.fromstring(response.content, forbid_dtd=True)
    except (defusedxml.DefusedXmlException, ParseError, ValueError):
        return []
    return [v.text or "" for ns in root.iter("namespace") if (ns.findtext("name") or "").strip() == "urn:vim25"
            for v in ns.iter("version")]


def session_cookie(response: httpx.Response) -> str | None:
    """The value of the latest `vmware_soap_session` Set-Cookie, as sent (quotes kept, as pyVmomi sends it back)."""
    for header in reversed(response.headers.get_list("set-cookie")):
        m = _SET_COOKIE.search(header)
        if m and m.group(1).strip('"'):
            return m.group(1)
    return None


async def speaks_soap(http: httpx.AsyncClient) -> bool:
    """SOAP is there when `RetrieveServiceContent` at /sdk answers a ServiceContent (every vCenter and ESXi)."""
    envelope = soapcodec.request("RetrieveServiceContent", moref("ServiceInstance", "ServiceInstance"), None)
    response = await send(http, "POST", SDK, "RetrieveServiceContent", content=envelope,
                          headers=_headers(OLDEST))
    try:
        content = soapcodec.answer(response.content, "RetrieveServiceContent",
                                   soapcodec.result_slot("RetrieveServiceContent", "ServiceInstance", None),
                                   "RetrieveServiceContent", response.status_code,
                                   response.headers.get("content-type", ""))
    except (VSphereError, soapcodec.SoapFault):
        return False
    return isinstance(content, dict) and content.get("_typeName") == "ServiceContent"


def _headers(version: str) -> dict[str, str]:
    return {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml", "SOAPAction": f'"urn:vim25/{version}"'}


class SoapClient(ViJsonClient):
    dialect = "soap"

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient):
        super().__init__(config, http)
        self._soap_version = OLDEST
        self._version_known = False
        # the session cookie is sent by hand (Login goes without one); httpx's jar must not add its own
        http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        http.cookies.clear()

    # ------------------------------------------------------------------------------------- transport
    async def start(self) -> None:
        version = newest_common(await server_versions(self.http))
        if version:
            self._soap_version, self._version_known = version, True
        await super().start()

    async def _service_content(self) -> Any:
        return await self._request("GET", "ServiceInstance", "ServiceInstance", "content", session=False)

    async def _post(self, mo_type: str, mo_id: str, method: str, params: dict | None, *, session: bool,
                    path: str | None = None, vm: str | None = None) -> httpx.Response:
        try:
            envelope = soapcodec.request(method, moref(mo_type, mo_id), params)
        except soapcodec.Unencodable as e:
            where = f" ({path})" if path else ""
            raise GuestFileError(f"{method}{where}: {e}", errno=errno.EINVAL, path=path, vm=vm) from None
        headers = _headers(self._soap_version)
        if session and self._token:
            headers["Cookie"] = f"{COOKIE}={self._token}"
        return await send(self.http, "POST", SDK, method, content=envelope, headers=headers)

    def _decode(self, response: httpx.Response, mo_type: str, method: str, params: dict | None) -> Any:
        return soapcodec.answer(response.content, method, soapcodec.result_slot(method, mo_type, params), method,
                                response.status_code, response.headers.get("content-type", ""))

    async def _request(self, http_method: str, mo_type: str, mo_id: str, name: str, body: dict | None = None, *,
                       path: str | None = None, vm: str | None = None, session: bool = True) -> Any:
        """VI/JSON's one entry point for calls, over SOAP: a POST is method `name`; a GET reads property `name`."""
        method, params = name, body
        if http_method == "GET":
            method, params = ("RetrieveServiceContent", None) if (mo_type, name) == ("ServiceInstance", "content") \
                else ("Fetch", {"prop": name})
        for attempt in (0, 1):
            token = self._token
            response = await self._post(mo_type, mo_id, method, params, session=session, path=path, vm=vm)
            if response.status_code in (401, 403) and session and attempt == 0:
                await self.relogin(token)
                continue
            try:
                result = self._decode(response, mo_type, method, params)
            except soapcodec.SoapFault as fault:
                error = vi_fault_error(fault.body, path=path, vm=vm)
                if getattr(error, "fault", None) == "NotAuthenticated" and session and attempt == 0:
                    await self.relogin(token)
                    continue
                raise error from None
            if method == "RetrieveServiceContent" and not self._version_known:
                self._learn_version(result)
            return result
        raise AssertionError("unreachable")

    def _learn_version(self, content: Any) -> None:
        """Without a versions document, talk the server's own version (capped at ours) from here on."""
        about = content.get("about") if isinstance(content, dict) else None
        theirs = about.get("apiVersion") if isinstance(about, dict) else None
        if (version := _version(theirs)) is not None:
            self._soap_version = ".".join(map(str, min(version, NEWEST)))
        self._version_known = True

    # ------------------------------------------------------------------------------------- session
    async def login(self) -> None:
        """Login goes without a cookie; the session is the cookie its answer sets."""
        params = {"userName": self.config.username, "password": self.config.password}
        response = await self._post("SessionManager", self._mo("sessionManager"), "Login", params, session=False)
        try:
            self._decode(response, "SessionManager", "Login", params)
        except soapcodec.SoapFault as fault:
            raise vi_fault_error(fault.body) from None
        token = session_cookie(response)
        if not token:
            raise ProtocolError(f"Login: the server answered without a {COOKIE} cookie")
        self._token = token
