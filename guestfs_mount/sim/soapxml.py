"""The SOAP (vim25) encoding: request envelopes to the dict shapes the VI/JSON handlers take, and their results and
faults back to envelopes, as vCenter and ESXi write them (pyVmomi's SoapAdapter reads them).

Shapes are VI/JSON's: a data object is a dict with `_typeName`, a MoRef is `{"_typeName": "ManagedObjectReference",
"type", "value"}`, a value in an `anyType` slot is boxed (`{"_typeName": "string", "_value": ...}`), `long`/`int` are
ints, `boolean` bools, `dateTime` ISO-8601 text. vimtypes.py gives the declared types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from . import vimtypes as vt

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
SOAPENC = "http://schemas.xmlsoap.org/soap/encoding/"
VIM25 = "urn:vim25"

_XSI_TYPE = f"{{{XSI}}}type"
_XSI_NIL = f"{{{XSI}}}nil"
MAX_DEPTH = 32  # nesting of data objects in a request (selectSet recursion); deeper is refused, not recursed into

ENVELOPE_START = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soapenv:Envelope xmlns:soapenc="{SOAPENC}" xmlns:soapenv="{SOAPENV}" xmlns:xsd="{XSD}" xmlns:xsi="{XSI}">\n'
    "<soapenv:Body>\n"
)
ENVELOPE_END = "\n</soapenv:Body>\n</soapenv:Envelope>"

_INT_RANGES = {"byte": 8, "short": 16, "int": 32, "long": 64}


class RequestError(Exception):
    """A request that cannot be read (not XML, a DTD, not an envelope, unknown method, missing or bad parameter):
    vCenter answers these with an InvalidRequest fault."""


@dataclass
class Call:
    method: str
    this: dict  # the MoRef the method is invoked on
    params: dict  # parameter name -> decoded value, absent when not sent


# ---------------------------------------------------------------- requests


def parse_request(data: bytes) -> Call:
    """Decode a request envelope; raises RequestError with a message naming what is wrong."""
    try:
        # DTDs are refused outright (no entity expansion, no external references), as vCenter refuses them
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as err:
        raise RequestError(f"XML with a DTD or entities is not accepted ({err.__class__.__name__})") from None
    except (ParseError, ValueError) as err:
        raise RequestError(f"the request is not well-formed XML: {err}") from None
    if root.tag != f"{{{SOAPENV}}}Envelope":
        raise RequestError(f"expected a SOAP envelope, got <{_local(root.tag)}>")
    body = root.find(f"{{{SOAPENV}}}Body")
    if body is None or len(body) == 0:
        raise RequestError("the SOAP envelope has no Body or an empty one")
    call = body[0]
    ns, method = _split_tag(call.tag)
    if ns != VIM25:
        raise RequestError(f"method element <{method}> is not in the {VIM25} namespace")
    if method not in vt.METHODS:
        raise RequestError(f"Unable to resolve WSDL method name {method}")
    params_spec, _ = vt.METHODS[method]
    children = list(call)
    if not children or _local(children[0].tag) != "_this":
        raise RequestError(f"Required parameter _this is missing while parsing call information for method {method}")
    this = _decode(children[0], vt.MOREF, f"{method}._this", 0)
    params = _decode_fields(children[1:], params_spec, f"method {method}", "parameter", 0)
    return Call(method=method, this=this, params=params)


def _decode_fields(children: list[Element], spec, where: str, kind: str, depth: int) -> dict:
    if depth > MAX_DEPTH:
        raise RequestError(f"data objects nested deeper than {MAX_DEPTH} levels in {where}")
    declared = dict(spec)
    out: dict = {}
    for child in children:
        name = _local(child.tag)
        if name not in declared:
            raise RequestError(f"Unexpected element {name} in {where}")
        type_name, array, _ = vt.split(declared[name])
        value = _decode(child, type_name, f"{where}.{name}", depth + 1)
        if value is None:
            continue
        if array:
            out.setdefault(name, []).append(value)
        elif name in out:
            raise RequestError(f"{name} appears more than once in {where}")
        else:
            out[name] = value
    for name, type_spec in spec:
        if not type_spec.endswith("?") and name not in out:
            raise RequestError(f"Required {kind} {name} is missing in {where}")
    return out


def _decode(elem: Element, declared: str, where: str, depth: int):
    if elem.get(_XSI_NIL) in ("true", "1"):
        return None
    xtype = elem.get(_XSI_TYPE)
    actual = _local(xtype) if xtype else None
    if declared == vt.MOREF or actual == vt.MOREF:
        mo_type = elem.get("type")
        if not mo_type:
            raise RequestError(f"{where}: a ManagedObjectReference needs a type attribute")
        return {"_typeName": vt.MOREF, "type": mo_type, "value": (elem.text or "").strip()}
    if declared == vt.ANY:
        if actual is None:
            raise RequestError(f"{where}: a value of type anyType needs xsi:type")
        if actual in vt.DATA_TYPES:
            return _decode_object(elem, actual, where, depth)
        if actual.startswith("ArrayOf"):
            item = _array_item(actual)
            return {"_typeName": actual, "_value": [_decode(c, item, where, depth + 1) for c in elem]}
        return {"_typeName": actual, "_value": _primitive(elem, actual, where)}
    if declared in vt.DATA_TYPES:
        kind = actual or declared
        if kind not in vt.DATA_TYPES:
            raise RequestError(f"{where}: unknown type {kind}")
        if not vt.is_subtype(kind, declared):
            raise RequestError(f"{where}: {kind} is not a {declared}")
        return _decode_object(elem, kind, where, depth)
    if len(elem):
        raise RequestError(f"{where}: a {declared} cannot hold elements")
    return _primitive(elem, declared, where)


def _decode_object(elem: Element, type_name: str, where: str, depth: int) -> dict:
    values = _decode_fields(list(elem), vt.fields(type_name), f"data object of type {type_name} ({where})", "property", depth)
    return {"_typeName": type_name, **values}


def _primitive(elem: Element, type_name: str, where: str):
    text = elem.text or ""
    if type_name == "boolean":
        word = text.strip().lower()
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise RequestError(f"{where}: {text!r} is not a boolean")
    if type_name in _INT_RANGES:
        bits = _INT_RANGES[type_name]
        try:
            n = int(text.strip())
        except ValueError:
            raise RequestError(f"{where}: {text!r} is not an xsd:{type_name}") from None
        if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
            raise RequestError(f"{where}: {n} is out of range for xsd:{type_name}")
        return n
    if type_name in ("float", "double"):
        try:
            return float(text.strip())
        except ValueError:
            raise RequestError(f"{where}: {text!r} is not an xsd:{type_name}") from None
    if type_name == "dateTime":
        try:
            datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RequestError(f"{where}: {text!r} is not an xsd:dateTime") from None
        return text.strip()
    return text  # strings, enums (their text), TypeName, PropertyPath


def _array_item(array_type: str) -> str:
    """The item type of `ArrayOfX`, which is also its items' tag: `ArrayOfByte` -> byte, `ArrayOfGuestFileInfo` ->
    GuestFileInfo, `ArrayOfManagedObjectReference` -> ManagedObjectReference."""
    item = array_type[len("ArrayOf"):]
    primitive = item[:1].lower() + item[1:]
    return primitive if primitive in vt.PRIMITIVES else item


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _local(name: str) -> str:
    """The local part of a tag (`{ns}x`) or of a qualified xsi:type value (`xsd:string`, `vim25:Foo`)."""
    return _split_tag(name)[1].rpartition(":")[2]


# ---------------------------------------------------------------- replies


def response(method: str, result, result_type: str | None) -> bytes:
    """A method's reply: `<{method}Response xmlns="urn:vim25">` with one `<returnval>` per value (none if unset)."""
    out = [ENVELOPE_START, f'<{method}Response xmlns="{VIM25}">']
    if result_type is not None:
        type_name, array, _ = vt.split(result_type)
        _encode(out, "returnval", result, type_name + ("[]" if array else ""))
    out.append(f"</{method}Response>")
    out.append(ENVELOPE_END)
    return "".join(out).encode("utf-8")


def fault(body: dict, message: str, code: str = "ServerFaultCode") -> bytes:
    """A soapenv:Fault for a VI fault dict (`_typeName` + fields, as faults.SimFault.vi_body makes it).

    The detail holds `<{Type}Fault xmlns="urn:vim25" xsi:type="{Type}">`, which is how pyVmomi and govmomi find the
    fault's class; `faultcode`/`faultstring`/`detail` are unqualified (pyVmomi matches the bare name `detail`).
    """
    kind = body["_typeName"]
    out = [
        ENVELOPE_START,
        f"<soapenv:Fault><faultcode>{code}</faultcode><faultstring>{_text(message)}</faultstring><detail>",
        f'<{kind}Fault xmlns="{VIM25}" xsi:type="{kind}">',
    ]
    _encode_fields(out, body, kind if kind in vt.DATA_TYPES else "MethodFault")
    out.append(f"</{kind}Fault></detail></soapenv:Fault>")
    out.append(ENVELOPE_END)
    return "".join(out).encode("utf-8")


def _encode(out: list[str], tag: str, value, declared: str | None) -> None:
    """Write `value` as element(s) named `tag`; `declared` is the WSDL type of the slot (None: not known here)."""
    if value is None:
        return
    if declared is not None and declared.endswith("[]"):
        for item in value if isinstance(value, list) else [value]:
            _encode(out, tag, item, declared[:-2])
        return
    if declared == vt.ANY:
        _encode_any(out, tag, value)
        return
    if isinstance(value, list):  # an array where the slot's type is not known: repeated elements
        for item in value:
            _encode(out, tag, item, declared)
        return
    if isinstance(value, dict):
        kind = value.get("_typeName")
        if "_value" in value:  # a boxed value in a typed slot: the slot's type says what it is
            _encode(out, tag, value["_value"], declared if declared is not None else kind)
            return
        if kind == vt.MOREF:
            _moref(out, tag, value, "")
            return
        typed = "" if kind is None or kind == declared else f' xsi:type="{kind}"'
        out.append(f"<{tag}{typed}>")
        _encode_fields(out, value, kind if kind in vt.DATA_TYPES else declared)
        out.append(f"</{tag}>")
        return
    out.append(f"<{tag}>{_scalar(value)}</{tag}>")


def _encode_fields(out: list[str], value: dict, type_name: str | None) -> None:
    """A data object's fields: the schema's (in WSDL order) first, then any other keys in the dict's order."""
    known = vt.fields(type_name) if type_name in vt.DATA_TYPES else []
    for name, type_spec in known:
        if name in value:
            name_type, array, _ = vt.split(type_spec)
            _encode(out, name, value[name], name_type + ("[]" if array else ""))
    names = {name for name, _ in known}
    for name, field_value in value.items():
        if name != "_typeName" and name not in names:
            _encode(out, name, field_value, None)


def _encode_any(out: list[str], tag: str, value) -> None:
    """A value in an `anyType` slot (DynamicProperty.val, Fetch's result): always with its xsi:type."""
    if isinstance(value, dict) and "_value" in value:
        kind, inner = value["_typeName"], value["_value"]
        if kind.startswith("ArrayOf"):
            item_tag = _array_item(kind)
            out.append(f'<{tag} xsi:type="{kind}">')
            for element in inner or []:
                _encode(out, item_tag, element, item_tag)
            out.append(f"</{tag}>")
        elif kind in vt.PRIMITIVES:
            xsd = "string" if kind in ("TypeName", "PropertyPath", "MethodName") else kind
            out.append(f'<{tag} xsi:type="xsd:{xsd}">{_scalar(inner)}</{tag}>')
        else:  # an enum
            out.append(f'<{tag} xsi:type="{kind}">{_scalar(inner)}</{tag}>')
        return
    if isinstance(value, dict) and value.get("_typeName") == vt.MOREF:
        _moref(out, tag, value, f' xsi:type="{vt.MOREF}"')
        return
    if isinstance(value, dict):
        _encode(out, tag, value, None)  # a data object: written with its own xsi:type
        return
    if isinstance(value, list):
        _encode_any(out, tag, {"_typeName": "ArrayOfString", "_value": value})
        return
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "int" if -(1 << 31) <= value < (1 << 31) else "long"
    else:
        kind = "string"
    out.append(f'<{tag} xsi:type="xsd:{kind}">{_scalar(value)}</{tag}>')


def _moref(out: list[str], tag: str, ref: dict, typed: str) -> None:
    out.append(f'<{tag} type="{_attr(str(ref.get("type", "")))}"{typed}>{_text(str(ref.get("value", "")))}</{tag}>')


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return _text(str(value))


# XML 1.0 cannot carry these at all (not even as character references); lone surrogates come from file names that
# are not UTF-8. Both become U+FFFD, as the guest agent reports undecodable names.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(s: str) -> str:
    s = _NOT_XML.sub("\ufffd", s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(s: str) -> str:
    return _text(s).replace('"', "&quot;")
