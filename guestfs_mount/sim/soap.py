"""The SOAP (vim25) endpoint: `POST /sdk`, and the version documents SOAP clients read first.

Requests are decoded by soapxml.py into the VI/JSON dict shapes and go to the same handlers (vijson.invoke,
vijson.get_property for Fetch), so counting, planned faults, latency and every behaviour are those of the other
dialects; only the encoding differs. The session is the `vmware_soap_session` cookie.
"""

from __future__ import annotations

import logging
import re
import secrets
from urllib.parse import urlsplit

from . import soapxml, vijson, vimtypes
from .faults import SimFault
from .state import Simulator

log = logging.getLogger("guestfs_mount.sim")

COOKIE = "vmware_soap_session"
MAX_REQUEST = 16 << 20  # bytes; a bigger envelope is refused unread
_COOKIE_VALUE = re.compile(rf'(?:^|[;,\s]){COOKIE}="?([^";,\s]*)"?')

# What a vCenter / ESXi 8.0U3 lists: pyVmomi's SmartConnect picks its newest version found here.
PRIOR_VERSIONS = (
    "8.0.2.0", "8.0.1.0", "8.0.0.2", "8.0.0.1", "8.0.0.0", "7.0.3.2", "7.0.3.1", "7.0.3.0", "7.0.2.1", "7.0.2.0",
    "7.0.1.1", "7.0.1.0", "7.0.0.2", "7.0.0.1", "7.0.0.0", "6.9.1", "6.8.7", "6.7.3", "6.7.2", "6.7.1", "6.7", "6.5",
    "6.0", "5.5", "5.1", "5.0", "4.1", "4.0", "2.5u2server", "2.5u2", "2.5",
)


def handle(h, sim: Simulator) -> None:
    path = urlsplit(h.path).path
    if path == "/sdk/vimServiceVersions.xml" and h.command == "GET":
        h.op = "vimServiceVersions.xml"
        _send_xml(h, 200, _service_versions(sim).encode())
        return
    if path == "/sdk/vimService.wsdl" and h.command == "GET":
        h.op = "vimService.wsdl"
        _send_xml(h, 200, _SERVICE_WSDL.encode())
        return
    if path != "/sdk":
        h.send_json(404, {"error": f"no such endpoint: {path}"})
        return
    if h.command != "POST":
        h.close_connection = True
        h.send_empty(405, {"Allow": "POST", "Connection": "close"})
        return
    h.op = "soap"
    cookie = session_cookie(h.headers.get("Cookie", ""))
    # vCenter hands a cookie to every caller that has none (before Login too); Login answers with the session's
    headers = {} if cookie else {"Set-Cookie": _set_cookie(sim, secrets.token_hex(20))}
    length = h.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_REQUEST:
        h.close_connection = True  # the body stays unread
        send_fault(h, SimFault("InvalidRequest", f"request body of {length} bytes is larger than {MAX_REQUEST}"), headers)
        return
    try:
        call = soapxml.parse_request(h.read_body())
    except soapxml.RequestError as err:
        send_fault(h, SimFault("InvalidRequest", str(err)), headers)
        return
    h.op = call.method
    try:
        result, result_type, token = _call(h, sim, call, cookie)
    except SimFault as fault:
        send_fault(h, fault, headers)
        return
    if token:
        headers["Set-Cookie"] = _set_cookie(sim, token)
    _send_xml(h, 200, soapxml.response(call.method, result, result_type), headers)


def _call(h, sim: Simulator, call: soapxml.Call, cookie: str | None):
    """(result, its declared type, a new session token or None) of a decoded call."""
    this = call.this
    if call.method == "Fetch":
        prop = call.params["prop"]
        h.op = prop  # counted and logged as VI/JSON counts a property GET
        value = vijson.get_property(sim, this["type"], this["value"], prop, cookie)
        return value, vimtypes.PROPERTIES.get((this["type"], prop), vimtypes.ANY), None
    _, result, headers = vijson.invoke(h, sim, this["type"], this["value"], call.method, call.params, cookie)
    return result, vimtypes.METHODS[call.method][1], (headers or {}).get(vijson.SESSION_HEADER)


def send_fault(h, fault: SimFault, headers: dict | None = None) -> None:
    """A SimFault as a SOAP fault (HTTP 500), as vCenter answers every failed call."""
    _send_xml(h, 500, soapxml.fault(fault.vi_body(), fault.message), headers)


def session_cookie(header: str) -> str | None:
    """The session id in a Cookie header; pyVmomi sends back the whole Set-Cookie text (`…"; Path=/; HttpOnly`)."""
    m = _COOKIE_VALUE.search(header)
    return m.group(1) if m and m.group(1) else None


def _set_cookie(sim: Simulator, value: str) -> str:
    secure = "; Secure" if sim.settings.tls else ""
    return f'{COOKIE}="{value}"; Path=/; HttpOnly{secure}'


def _send_xml(h, status: int, data: bytes, headers: dict | None = None) -> None:
    h.send_body(status, data, "text/xml; charset=utf-8", headers)


def _service_versions(sim: Simulator) -> str:
    prior = "".join(f"\n   <version>{v}</version>" for v in PRIOR_VERSIONS)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<namespaces version="1.0">\n <namespace>\n  <name>urn:vim25</name>\n'
        f"  <version>{sim.product.about['apiVersion']}</version>\n  <priorVersions>{prior}\n  </priorVersions>\n"
        " </namespace>\n</namespaces>\n"
    )


# The service description vCenter serves beside the versions file; older pyVmomi reads the vim25 namespace from
# its <import>. (vim.wsdl itself, the full schema, is not served.)
_SERVICE_WSDL = """<?xml version="1.0" encoding="UTF-8" ?>
<definitions targetNamespace="urn:vim25Service" xmlns="http://schemas.xmlsoap.org/wsdl/"
   xmlns:interface="urn:vim25" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/">
   <import location="vim.wsdl" namespace="urn:vim25" />
   <service name="VimService">
      <port binding="interface:VimBinding" name="VimPort">
         <soap:address location="https://localhost/sdk" />
      </port>
   </service>
</definitions>
"""
