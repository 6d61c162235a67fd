"""The simulator's vim25 schema slice (guestfs_mount/sim/vimtypes.py) checked against pyVmomi's own type info."""

import pytest

pytest.importorskip("pyVmomi")

from pyVmomi import VmomiSupport as V  # noqa: E402

from guestfs_mount.sim import vimtypes as vt  # noqa: E402

VERSION = "vim.version.v8_0_3_0"


def wsdl_type_name(t) -> str:
    if issubclass(t, list):
        return wsdl_type_name(t.Item) + "[]"
    if issubclass(t, V.ManagedObject):
        return vt.MOREF
    return V.GetWsdlName(t)


def spec_of(name: str, t, flags: int) -> tuple[str, str]:
    return name, wsdl_type_name(t) + ("?" if flags & V.F_OPTIONAL else "")


def own_fields(type_name: str) -> list[tuple[str, str]]:
    t = V.GetWsdlType("urn:vim25", type_name)
    base = t.__bases__[0]
    inherited = {p.name for p in base._GetPropertyList()} if hasattr(base, "_GetPropertyList") else set()
    return [
        spec_of(p.name, p.type, p.flags)
        for p in t._GetPropertyList()
        if p.name not in inherited and V.IsChildVersion(VERSION, p.version) and not (p.name == "msg" and type_name == "MethodFault")
    ]


def request_types() -> set[str]:
    """Types a request can hold: reachable from the parameters, through fields and subtypes."""
    seen: set[str] = set()
    todo = [vt.split(t)[0] for params, _ in vt.METHODS.values() for _, t in params]
    while todo:
        name = todo.pop()
        if name in seen or name not in vt.DATA_TYPES:
            continue
        seen.add(name)
        todo += [vt.split(t)[0] for _, t in vt.fields(name)]
        todo += [sub for sub in vt.DATA_TYPES if vt.is_subtype(sub, name)]
    return seen


@pytest.mark.parametrize("name", sorted(vt.DATA_TYPES))
def test_data_type_matches_pyvmomi(name):
    base, own = vt.DATA_TYPES[name]
    t = V.GetWsdlType("urn:vim25", name)
    assert base == (None if name == "DataObject" else V.GetWsdlName(t.__bases__[0]))
    theirs = own_fields(name) if name != "DataObject" else []
    if name in request_types():
        assert list(own) == theirs, "a request type must list every field, in pyVmomi's order"
    else:
        positions = [theirs.index(f) for f in own]  # ValueError: a field pyVmomi does not have, or another type
        assert positions == sorted(positions), "reply fields must keep the WSDL order"


@pytest.mark.parametrize("name", sorted(set(vt.METHODS) - {"Fetch"}))
def test_method_matches_pyvmomi(name):
    params, result = vt.METHODS[name]
    info = V.GetWsdlMethod("urn:vim25", name).info
    assert list(params) == [spec_of(p.name, p.type, p.flags) for p in info.params]
    if info.result is type(None) or info.result is None:
        assert result is None
    else:
        assert result == spec_of("", info.result, info.resultFlags)[1]


@pytest.mark.parametrize("key", sorted(vt.PROPERTIES))
def test_property_type_matches_pyvmomi(key):
    mo_type, prop = key
    info = V.GetWsdlType("urn:vim25", mo_type)._GetPropertyInfo(prop)
    assert vt.PROPERTIES[key] == spec_of(prop, info.type, info.flags)[1]


def test_every_named_type_is_known():
    known = set(vt.DATA_TYPES) | vt.PRIMITIVES | vt.ENUMS | {vt.MOREF, vt.ANY}
    named = [t for _, own in vt.DATA_TYPES.values() for _, t in own]
    named += [t for params, result in vt.METHODS.values() for _, t in params + ((("", result),) if result else ())]
    named += list(vt.PROPERTIES.values())
    assert {vt.split(t)[0] for t in named} <= known
    for enum in vt.ENUMS:
        assert issubclass(V.GetWsdlType("urn:vim25", enum), V.Enum)
