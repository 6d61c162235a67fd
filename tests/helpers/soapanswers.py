"""SOAP answers a test server gives on purpose: an envelope around a method's answer, a fault of any class, and a
billion-laughs document (entities that expand to gigabytes if a parser lets them)."""

from __future__ import annotations

_ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
             'envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-'
             'instance"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>')


def envelope(method: str, returnval: str) -> bytes:
    """`<{method}Response>` holding `returnval` (the <returnval> elements, or nothing)."""
    return _ENVELOPE.format(f'<{method}Response xmlns="urn:vim25">{returnval}</{method}Response>').encode()


def fault(kind: str, text: str, fields: str = "") -> bytes:
    """A soapenv:Fault as vCenter writes it: the class in the detail element's xsi:type."""
    return _ENVELOPE.format(
        f"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{text}</faultstring><detail>"
        f'<{kind}Fault xmlns="urn:vim25" xsi:type="{kind}">{fields}</{kind}Fault></detail></soapenv:Fault>').encode()


def billion_laughs(method: str) -> bytes:
    """An answer whose one entity would expand to 10**9 'lol's."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    body = envelope(method, "<returnval>&lol9;</returnval>").decode().split("?>", 1)[1]
    return f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]>{body}'.encode()
