"""SOAP envelopes for vim25: a method call in VI/JSON's shapes to the request pyVmomi would write, and an answer back
to the shapes VI/JSON's `unbox()` gives (docs/client.md, "SOAP (vim25) on the wire").

Shapes: a data object is a dict with `_typeName`; a MoRef is `{"_typeName": "ManagedObjectReference", "type",
"value"}`; an array is a list; `int`/`long`/`short`/`byte` are ints, `boolean` a bool, `dateTime` ISO-8601 text; a
value in an `anyType` slot (a property's `val`) comes unboxed, as `unbox()` leaves it (`ArrayOfByte` -> a list of
signed ints). soaptypes.py holds the declared types.

Answers are parsed by defusedxml with DTDs refused: no entity expansion (billion laughs), no external entities. An
answer that is not the envelope asked for is a `ProtocolError`, never a KeyError; a SOAP fault is a `SoapFault`
holding the fault as the dict VI/JSON would have sent (`_typeName` = the detail's xsi:type).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from guestfs_mount.vsphere import soaptypes as st
from guestfs_mount.vsphere.faults import ProtocolError

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
VIM25 = "urn:vim25"
_XSI_TYPE = f"{{{XSI}}}type"
_XSI_NIL = f"{{{XSI}}}nil"
MAX_DEPTH = 64  # nesting of elements in an answer we descend into; deeper is nonsense, not recursion

# the envelope as pyVmomi writes it (same prefixes, so a capture reads the same)
_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
         '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
         f'xmlns:soapenv="{SOAPENV}" xmlns:xsi="{XSI}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
         "<soapenv:Body>")
_TAIL = "</soapenv:Body>\n</soapenv:Envelope>"

# XML 1.0 cannot carry these, not even as character references; lone surrogates are undecodable file names
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MOREFS = {st.MOREF, "ManagedObject"}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class Unencodable(ValueError):
    """A value XML cannot carry (a control character or an undecodable byte in a guest path)."""


class SoapFault(Exception):
    """A SOAP fault: `body` is the fault as a VI/JSON fault object (`_typeName`, its fields, `faultstring`)."""

    def __init__(self, body: dict):
        super().__init__(body["_typeName"])
        self.body = body


# ================================================================================================ requests


def request(method: str, this: dict, params: dict | None) -> bytes:
    """The envelope of one call: `_this` first, then the parameters in WSDL order, unset ones left out."""
    out = [_HEAD, f'<{method} xmlns="{VIM25}">']
    _moref(out, "_this", this, "")
    params = {k: v for k, v in (params or {}).items() if v is not None}
    declared = st.METHODS[method][0] if method in st.METHODS else ()
    for name, slot in declared:
        if name in params:
            _encode(out, name, params.pop(name), slot.type_name, slot.array)
    for name, value in params.items():  # a method or parameter the table does not know: as given
        _encode(out, name, value, None, False)
    out.append(f"</{method}>")
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


def _encode(out: list[str], tag: str, value: Any, declared: str | None, array: bool) -> None:
    if value is None:
        return
    if array or (declared is None and isinstance(value, list)):
        for item in value if isinstance(value, list) else [value]:
            _encode(out, tag, item, declared, False)
        return
    if isinstance(value, dict):
        kind = value.get("_typeName")
        if kind == st.MOREF:
            _moref(out, tag, value, f' xsi:type="{st.MOREF}"' if declared == st.ANY else "")
        elif "_value" in value:  # a boxed value (an anyType slot): its type goes along
            inner = value["_value"]
            out.append(f'<{tag} xsi:type="{_box_type(kind)}">')
            if isinstance(inner, list):
                item = st.array_item(kind)
                for element in inner:
                    _encode(out, item, element, item, False)
            else:
                out.append(_scalar(inner))
            out.append(f"</{tag}>")
        else:
            typed = f' xsi:type="{kind}"' if kind and kind != declared else ""
            out.append(f"<{tag}{typed}>")
            _encode_fields(out, value, kind if st.is_data_type(kind) else declared)
            out.append(f"</{tag}>")
        return
    out.append(f"<{tag}>{_scalar(value)}</{tag}>")


def _box_type(kind: str) -> str:
    """The xsi:type of a boxed value: `xsd:int`; vmodl's string types travel as `xsd:string`; others by name."""
    if kind not in st.PRIMITIVES:
        return kind
    return "xsd:string" if kind in ("TypeName", "PropertyPath", "MethodName", "Link") else f"xsd:{kind}"


def _encode_fields(out: list[str], value: dict, type_name: str | None) -> None:
    rest = {k: v for k, v in value.items() if k != "_typeName" and v is not None}
    for name, slot in st.fields(type_name) if type_name else ():
        if name in rest:
            _encode(out, name, rest.pop(name), slot.type_name, slot.array)
    for name, field_value in rest.items():
        _encode(out, name, field_value, None, False)


def _moref(out: list[str], tag: str, ref: dict, typed: str) -> None:
    mo_type, value = _text(ref.get("type", ""), attribute=True), _text(ref.get("value", ""))
    out.append(f'<{tag}{typed} type="{mo_type}">{value}</{tag}>')


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _text(str(value))


def _text(s: str, attribute: bool = False) -> str:
    bad = _NOT_XML.search(s)
    if bad:
        raise Unencodable(f"the character {bad.group()!r} cannot be sent in a SOAP request")
    # a raw CR would reach the server as LF (XML end-of-line handling): send it as a reference
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return s.replace('"', "&quot;") if attribute else s


# ================================================================================================ answers


_ANY_RESULT = st.Slot("any?")  # a method or property the table does not know: by what the answer says


def result_slot(method: str, this_type: str, params: dict | None) -> st.Slot | None:
    """The declared result of a call: None for a void method; a Fetch has its property's type."""
    if method == "Fetch":
        return st.PROPERTIES.get((this_type, (params or {}).get("prop")), _ANY_RESULT)
    if method in st.METHODS:
        return st.METHODS[method][1]
    return _ANY_RESULT


def answer(data: bytes, method: str, result: st.Slot | None, what: str, status: int, content_type: str) -> Any:
    """The result of `method` from its answer's body: None for a void or unset result, a list for an array
    result. Raises SoapFault for a SOAP fault, ProtocolError for anything that is not the answer asked for."""
    body = _body(data, what, status, content_type)
    children = list(body)
    if len(children) == 1 and _local(children[0].tag) == "Fault":
        raise SoapFault(_fault(children[0], what))
    if status != 200:
        raise ProtocolError(f"{what}: HTTP {status} from the server with no SOAP fault in it")
    if len(children) != 1 or _local(children[0].tag) != f"{method}Response":
        got = f"<{_local(children[0].tag)}>" if children else "an empty Body"
        raise ProtocolError(f"{what}: the server answered {got}, not {method}Response")
    if result is None:
        return None
    values = [r for r in children[0] if _local(r.tag) == "returnval"]
    if result.array or (result.type_name == st.ANY and len(values) > 1):
        return [_decode(r, result.type_name, what, 0) for r in values]
    if not values:
        return None
    if len(values) > 1:
        raise ProtocolError(f"{what}: {len(values)} return values where one was expected")
    return _decode(values[0], result.type_name, what, 0)


def _body(data: bytes, what: str, status: int, content_type: str) -> Element:
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        raise ProtocolError(f"{what}: the answer holds a DTD or entity declarations, refused "
                            f"({type(e).__name__})") from None
    except (ParseError, ValueError):
        start = data[:80].decode("utf-8", "replace").replace("\n", " ")
        kind = content_type or "no content type"
        raise ProtocolError(f"{what}: HTTP {status} answer is not XML ({kind}): {start!r}") from None
    if root.tag != f"{{{SOAPENV}}}Envelope":
        raise ProtocolError(f"{what}: HTTP {status} answer is not a SOAP envelope but <{_local(root.tag)}>")
    body = root.find(f"{{{SOAPENV}}}Body")
    if body is None:
        raise ProtocolError(f"{what}: the SOAP envelope has no Body")
    return body


def _fault(elem: Element, what: str) -> dict:
    """A soapenv:Fault -> the VI/JSON fault dict: the class is the xsi:type of the one element in `detail` (else its
    tag without `Fault`), its children are the fault's fields."""
    parts = {_local(child.tag): child for child in elem}
    text = (parts["faultstring"].text or "") if "faultstring" in parts else ""
    detail = list(parts["detail"]) if "detail" in parts else []
    if not detail:
        raise ProtocolError(f"{what}: SOAP fault without a vim fault class: {text[:200]!r}")
    inner = detail[0]
    kind = _type_of(inner) or _local(inner.tag).removesuffix("Fault") or "MethodFault"
    known = kind if st.is_data_type(kind) else "MethodFault"
    body = _decode_object(inner, known, what, 0)
    body["_typeName"] = kind
    body.setdefault("faultstring", text)
    return body


def _decode(elem: Element, declared: str | None, what: str, depth: int) -> Any:
    """One element as the declared type says (or its xsi:type, which wins: subtypes, anyType slots)."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{what}: the answer is nested deeper than {MAX_DEPTH} levels")
    if not elem.attrib and declared in st.PRIMITIVES and not len(elem):  # most of a listing: be quick
        return _primitive(elem.text or "", declared, what, elem.tag)
    if elem.get(_XSI_NIL) in ("true", "1"):
        return None
    actual = _type_of(elem) or (declared if declared != st.ANY else None)
    # a MoRef is text with a `type` attribute (pyVmomi labels one in an anyType slot xsi:type="ManagedObject")
    if actual in _MOREFS or (elem.get("type") is not None and len(elem) == 0 and actual not in st.PRIMITIVES):
        return _decode_moref(elem, what)
    if actual is None:
        if len(elem):
            return _decode_object(elem, None, what, depth)
        return elem.text or ""
    if actual.startswith("ArrayOf"):
        item = st.array_item(actual)
        return [_decode(child, item, what, depth + 1) for child in elem]
    if actual in st.PRIMITIVES:
        if len(elem):
            raise ProtocolError(f"{what}: a {actual} value holds elements")
        return _primitive(elem.text or "", actual, what, _local(elem.tag))
    if st.is_data_type(actual) or len(elem):
        # a type the table does not know (a newer subtype) decodes by the declared type's fields, keeping its name
        out = _decode_object(elem, actual if st.is_data_type(actual) else declared, what, depth)
        out["_typeName"] = actual
        return out
    return elem.text or ""  # an enum, or a type we do not know that holds only text


def _decode_object(elem: Element, type_name: str | None, what: str, depth: int) -> dict:
    declared = st.field_slots(type_name) if type_name else {}
    out: dict = {"_typeName": type_name} if type_name else {}
    seen_once: set[str] = set()
    for child in elem:
        name = _local(child.tag)
        slot = declared.get(name)
        value = _decode(child, slot.type_name if slot else None, what, depth + 1)
        if slot is not None and slot.array:
            out.setdefault(name, []).append(value)
        elif name in out:  # repeated: an array the table does not know, or nonsense in a single field
            if slot is not None:
                raise ProtocolError(f"{what}: {name} appears more than once in {type_name}")
            if name in seen_once:
                out[name] = [out[name]]
                seen_once.discard(name)
            out[name].append(value)
        else:
            out[name] = value
            seen_once.add(name)
    return out


def _decode_moref(elem: Element, what: str) -> dict:
    mo_type = elem.get("type")
    if not mo_type:
        raise ProtocolError(f"{what}: a ManagedObjectReference ({_local(elem.tag)}) without a type")
    return {"_typeName": st.MOREF, "type": mo_type, "value": (elem.text or "").strip()}


def _primitive(text: str, kind: str, what: str, name: str) -> Any:
    if kind == "boolean":
        value = _BOOLEANS.get(text.strip().lower())
        if value is None:
            raise ProtocolError(f"{what}: {_local(name)} {text[:40]!r} is not a boolean")
        return value
    try:
        if kind in st.INTEGERS:
            return int(text.strip())
        if kind in st.FLOATS:
            return float(text.strip())
    except ValueError:
        raise ProtocolError(f"{what}: {_local(name)} {text[:40]!r} is not an xsd:{kind}") from None
    return text


def _type_of(elem: Element) -> str | None:
    kind = elem.get(_XSI_TYPE)
    return _local(kind) if kind else None


@lru_cache(maxsize=1024)
def _local(name: str) -> str:
    """`{ns}tag` -> tag; a QName value (`xsd:string`, `vim25:Foo`) -> its local part."""
    return name.rpartition("}")[2].rpartition(":")[2]
