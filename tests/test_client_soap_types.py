"""The client's vim25 slice (guestfs_mount/vsphere/soaptypes.py) checked against pyVmomi's own type info: every
type, field, method and property the SOAP dialect decodes or encodes."""

import pytest

pytest.importorskip("pyVmomi")

from pyVmomi import VmomiSupport as V  # noqa: E402

from guestfs_mount.vsphere import soaptypes as st  # noqa: E402

VERSION = "vim.version.v8_0_3_0"


def wsdl_name(t) -> str:
    if issubclass(t, list):
        return wsdl_name(t.Item) + "[]"
    if issubclass(t, V.ManagedObject):
        return st.MOREF
    return V.GetWsdlName(t)


def slot_of(t, flags: int) -> str:
    return wsdl_name(t) + ("?" if flags & V.F_OPTIONAL else "")


def theirs(type_name: str) -> list[tuple[str, str]]:
    """pyVmomi's own fields of a type (without the client-side MethodFault.msg), in WSDL order."""
    t = V.GetWsdlType("urn:vim25", type_name)
    base = t.__bases__[0]
    inherited = {p.name for p in base._GetPropertyList()} if hasattr(base, "_GetPropertyList") else set()
    return [(p.name, slot_of(p.type, p.flags)) for p in t._GetPropertyList()
            if p.name not in inherited and V.IsChildVersion(VERSION, p.version)
            and not (type_name == "MethodFault" and p.name == "msg")]


def ours(type_name: str) -> list[tuple[str, str]]:
    return [(name, repr(slot)) for name, slot in st.TYPES[type_name][1]]


def sent_types() -> set[str]:
    """Data types a request can hold: reachable from the parameters through fields and subtypes."""
    seen: set[str] = set()
    todo = [slot.type_name for params, _ in st.METHODS.values() for _, slot in params]
    while todo:
        name = todo.pop()
        if name in seen or name not in st.TYPES:
            continue
        seen.add(name)
        todo += [slot.type_name for _, slot in st.fields(name)]
        todo += [sub for sub in st.TYPES if sub != name and name in _ancestors(sub)]
    return seen


def _ancestors(name: str) -> list[str]:
    chain = []
    while name in st.TYPES and st.TYPES[name][0]:
        name = st.TYPES[name][0]
        chain.append(name)
    return chain


@pytest.mark.parametrize("name", sorted(st.TYPES))
def test_type_matches_pyvmomi(name):
    base = st.TYPES[name][0]
    t = V.GetWsdlType("urn:vim25", name)
    assert base == (None if name == "DataObject" else V.GetWsdlName(t.__bases__[0]))
    if name == "DataObject":
        return
    if name in sent_types():
        assert ours(name) == theirs(name), "a type the client sends lists every field, in pyVmomi's order"
    else:
        positions = [theirs(name).index(f) for f in ours(name)]  # ValueError: a field or type pyVmomi does not have
        assert positions == sorted(positions), "an answer type keeps the WSDL order"


@pytest.mark.parametrize("name", sorted(set(st.METHODS) - {"Fetch"}))
def test_method_matches_pyvmomi(name):
    params, result = st.METHODS[name]
    info = V.GetWsdlMethod("urn:vim25", name).info
    assert [(n, repr(s)) for n, s in params] == [(p.name, slot_of(p.type, p.flags)) for p in info.params]
    if info.result is None or info.result is type(None):
        assert result is None
    else:
        assert repr(result) == slot_of(info.result, info.resultFlags)


@pytest.mark.parametrize("key", sorted(st.PROPERTIES))
def test_property_matches_pyvmomi(key):
    mo_type, prop = key
    info = V.GetWsdlType("urn:vim25", mo_type)._GetPropertyInfo(prop)
    assert repr(st.PROPERTIES[key]) == slot_of(info.type, info.flags)


def test_every_named_type_is_known_and_enums_are_enums():
    known = set(st.TYPES) | st.PRIMITIVES | st.ENUMS | {st.MOREF, st.ANY}
    slots = [s for _, own in st.TYPES.values() for _, s in own]
    slots += [s for params, result in st.METHODS.values() for _, s in params + ((("", result),) if result else ())]
    slots += list(st.PROPERTIES.values())
    assert {s.type_name for s in slots} <= known
    for enum in st.ENUMS:
        assert issubclass(V.GetWsdlType("urn:vim25", enum), V.Enum)


def test_the_types_other_work_reads_are_covered():
    """A host's name, certificate and management network (the host directory) and guest programs decode typed."""
    for type_name, field, slot in [
        ("HostConfigInfo", "certificate", "byte[]?"),
        ("VirtualNicManagerNetConfig", "selectedVnic", "Link[]?"),
        ("HostVirtualNic", "spec", "HostVirtualNicSpec"),
        ("HostVirtualNicSpec", "ip", "HostIpConfig?"),
        ("HostIpConfig", "dhcp", "boolean"),
        ("GuestProcessInfo", "pid", "long"),
        ("GuestProcessInfo", "exitCode", "int?"),
        ("GuestProgramSpec", "envVariables", "string[]?"),
    ]:
        assert repr(dict(st.fields(type_name))[field]) == slot
    assert repr(st.METHODS["StartProgramInGuest"][1]) == "long"
    assert repr(st.METHODS["ListProcessesInGuest"][1]) == "GuestProcessInfo[]?"
