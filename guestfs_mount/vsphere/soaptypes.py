"""The part of the vim25 schema the SOAP dialect needs, written from pyVmomi's type info (`pyVmomi/_typeinfo_vim.py`,
vim 8.0.3.0); tests/test_client_soap_types.py checks every entry against it.

SOAP carries no type on a value whose type the WSDL declares (`<size>221</size>` is a long, `<dhcp>false</dhcp>` a
boolean, one `<files>` is still an array), so decoding an answer into the shapes VI/JSON's `unbox()` gives needs the
declared type of each field, and encoding a request needs it to write `xsi:type` exactly where the value is a
subtype of the declared type (`auth`, `fileAttributes`, `selectSet`), as pyVmomi does.

Notation: a field is `name:type`, where type is an xsd or vmodl primitive, `MoRef`, `any` (xsd:anyType), an enum or a
data type; `[]` marks an array and a trailing `?` an optional field. Request types (what the client sends) list every
field in WSDL order, since the order is the wire order. Answer types list the fields the client reads, in WSDL order;
fields not listed still decode (by their xsi:type, or as text), so a newer server's additions do no harm.
"""

from __future__ import annotations

from functools import lru_cache

MOREF = "ManagedObjectReference"
ANY = "anyType"

# xsd types, and the vmodl types that travel as strings; int-like ones decode to int, boolean to bool
PRIMITIVES = {
    "string", "boolean", "byte", "short", "int", "long", "float", "double", "dateTime", "base64Binary", "anyURI",
    "TypeName", "PropertyPath", "MethodName", "Link",
}
INTEGERS = {"byte", "short", "int", "long"}
FLOATS = {"float", "double"}
ENUMS = {"VirtualMachinePowerState", "VirtualMachineConnectionState"}

_ALIASES = {"MoRef": MOREF, "any": ANY}

# type -> (base type, own fields); the base's fields come first on the wire
_TYPES: dict[str, tuple[str | None, str]] = {
    "DataObject": (None, ""),
    "DynamicData": ("DataObject", "dynamicType:string? dynamicProperty:DynamicProperty[]?"),
    "DynamicProperty": ("DataObject", "name:PropertyPath val:any"),
    # ------------------------------------------------------------ requests: property collector, views
    "PropertyFilterSpec": ("DynamicData", "propSet:PropertySpec[] objectSet:ObjectSpec[] "
                                          "reportMissingObjectsInResults:boolean?"),
    "PropertySpec": ("DynamicData", "type:TypeName all:boolean? pathSet:PropertyPath[]?"),
    "ObjectSpec": ("DynamicData", "obj:MoRef skip:boolean? selectSet:SelectionSpec[]?"),
    "SelectionSpec": ("DynamicData", "name:string?"),
    "TraversalSpec": ("SelectionSpec", "type:TypeName path:PropertyPath skip:boolean? selectSet:SelectionSpec[]?"),
    "RetrieveOptions": ("DynamicData", "maxObjects:int?"),
    # ------------------------------------------------------------ requests: guest operations
    "GuestAuthentication": ("DynamicData", "interactiveSession:boolean"),
    "NamePasswordAuthentication": ("GuestAuthentication", "username:string password:string"),
    "SAMLTokenAuthentication": ("GuestAuthentication", "token:string username:string?"),
    "SSPIAuthentication": ("GuestAuthentication", "sspiToken:string"),
    "TicketedSessionAuthentication": ("GuestAuthentication", "ticket:string"),
    "GuestFileAttributes": ("DynamicData", "modificationTime:dateTime? accessTime:dateTime? symlinkTarget:string?"),
    "GuestPosixFileAttributes": ("GuestFileAttributes", "ownerId:int? groupId:int? permissions:long?"),
    "GuestWindowsFileAttributes": ("GuestFileAttributes", "hidden:boolean? readOnly:boolean? createTime:dateTime?"),
    "GuestProgramSpec": ("DynamicData", "programPath:string arguments:string workingDirectory:string? "
                                        "envVariables:string[]?"),
    "GuestWindowsProgramSpec": ("GuestProgramSpec", "startMinimized:boolean"),
    # ------------------------------------------------------------ answers: session and inventory
    "ServiceContent": ("DynamicData", "rootFolder:MoRef propertyCollector:MoRef viewManager:MoRef? about:AboutInfo "
                                      "sessionManager:MoRef? searchIndex:MoRef? fileManager:MoRef? "
                                      "guestOperationsManager:MoRef?"),
    "AboutInfo": ("DynamicData", "name:string fullName:string vendor:string version:string build:string "
                                 "osType:string productLineId:string apiType:string apiVersion:string "
                                 "instanceUuid:string?"),
    "UserSession": ("DynamicData", "key:string userName:string fullName:string loginTime:dateTime "
                                   "lastActiveTime:dateTime locale:string messageLocale:string "
                                   "extensionSession:boolean ipAddress:string userAgent:string callCount:long"),
    "RetrieveResult": ("DynamicData", "token:string? objects:ObjectContent[]"),
    "ObjectContent": ("DynamicData", "obj:MoRef propSet:DynamicProperty[]? missingSet:MissingProperty[]?"),
    "MissingProperty": ("DynamicData", "path:PropertyPath fault:MethodFault"),
    "VirtualMachineRuntimeInfo": ("DynamicData", "host:MoRef? connectionState:VirtualMachineConnectionState "
                                                 "powerState:VirtualMachinePowerState"),
    # ------------------------------------------------------------ answers: an ESXi host (hosts, pinning)
    "HostConfigInfo": ("DynamicData", "host:MoRef product:AboutInfo "
                                      "virtualNicManagerInfo:HostVirtualNicManagerInfo? certificate:byte[]?"),
    "HostVirtualNicManagerInfo": ("DynamicData", "netConfig:VirtualNicManagerNetConfig[]?"),
    "VirtualNicManagerNetConfig": ("DynamicData", "nicType:string multiSelectAllowed:boolean "
                                                  "candidateVnic:HostVirtualNic[]? selectedVnic:Link[]?"),
    "HostVirtualNic": ("DynamicData", "device:string key:string portgroup:string spec:HostVirtualNicSpec port:Link?"),
    "HostVirtualNicSpec": ("DynamicData", "ip:HostIpConfig? mac:string? portgroup:string? mtu:int? tsoEnabled:boolean? "
                                          "netStackInstanceKey:string?"),
    "HostIpConfig": ("DynamicData", "dhcp:boolean ipAddress:string? subnetMask:string?"),
    # ------------------------------------------------------------ answers: guest operations
    "GuestListFileInfo": ("DynamicData", "files:GuestFileInfo[]? remaining:int"),
    "GuestFileInfo": ("DynamicData", "path:string type:string size:long attributes:GuestFileAttributes"),
    "FileTransferInformation": ("DynamicData", "attributes:GuestFileAttributes size:long url:string"),
    "GuestProcessInfo": ("DynamicData", "name:string pid:long owner:string cmdLine:string startTime:dateTime "
                                        "endTime:dateTime? exitCode:int?"),
    # ------------------------------------------------------------ faults (MethodFault's `msg` is pyVmomi's own)
    "LocalizableMessage": ("DynamicData", "key:string arg:KeyAnyValue[]? message:string?"),
    "KeyAnyValue": ("DynamicData", "key:string value:any"),
    "MethodFault": ("DynamicData", "faultCause:MethodFault? faultMessage:LocalizableMessage[]?"),
    "RuntimeFault": ("MethodFault", ""),
    "VimFault": ("MethodFault", ""),
    "InvalidRequest": ("RuntimeFault", ""),
    "InvalidArgument": ("RuntimeFault", "invalidProperty:PropertyPath?"),
    "ManagedObjectNotFound": ("RuntimeFault", "obj:MoRef"),
    "SystemError": ("RuntimeFault", "reason:string"),
    "SecurityError": ("RuntimeFault", ""),
    "NoPermission": ("SecurityError", "object:MoRef? privilegeId:string?"),
    "NotAuthenticated": ("NoPermission", ""),
    "InvalidProperty": ("MethodFault", "name:PropertyPath"),
    "InvalidLogin": ("VimFault", ""),
    "TaskInProgress": ("VimFault", "task:MoRef"),
    "InvalidState": ("VimFault", ""),
    "InvalidPowerState": ("InvalidState", "requestedState:VirtualMachinePowerState? "
                                          "existingState:VirtualMachinePowerState"),
    "FileFault": ("VimFault", "file:string"),
    "FileNotFound": ("FileFault", ""),
    "FileAlreadyExists": ("FileFault", ""),
    "NotAFile": ("FileFault", ""),
    "NotADirectory": ("FileFault", ""),
    "DirectoryNotEmpty": ("FileFault", ""),
    "FileNameTooLong": ("FileFault", ""),
    "FileTooLarge": ("FileFault", "datastore:string fileSize:long maxFileSize:long?"),
    "NoDiskSpace": ("FileFault", "datastore:string"),
    "CannotAccessFile": ("FileFault", ""),
    "FileNotWritable": ("FileFault", ""),
    "FileLocked": ("FileFault", ""),
    "GuestOperationsFault": ("VimFault", ""),
    "InvalidGuestLogin": ("GuestOperationsFault", ""),
    "GuestPermissionDenied": ("GuestOperationsFault", ""),
    "GuestOperationsUnavailable": ("GuestOperationsFault", ""),
    "GuestComponentsOutOfDate": ("GuestOperationsFault", ""),
    "OperationNotSupportedByGuest": ("GuestOperationsFault", ""),
    "OperationDisabledByGuest": ("GuestOperationsFault", ""),
    "TooManyGuestLogons": ("GuestOperationsFault", ""),
    "GuestProcessNotFound": ("GuestOperationsFault", "pid:long"),
}

_GUEST = "vm:MoRef auth:GuestAuthentication "
# method -> (parameters after _this, in WSDL order; result type or None for a void method)
_METHODS: dict[str, tuple[str, str | None]] = {
    "RetrieveServiceContent": ("", "ServiceContent"),
    "Login": ("userName:string password:string locale:string?", "UserSession"),
    "Logout": ("", None),
    "CreateContainerView": ("container:MoRef type:TypeName[]? recursive:boolean", "MoRef"),
    "DestroyView": ("", None),
    "RetrieveProperties": ("specSet:PropertyFilterSpec[]", "ObjectContent[]?"),
    "RetrievePropertiesEx": ("specSet:PropertyFilterSpec[] options:RetrieveOptions", "RetrieveResult?"),
    "ContinueRetrievePropertiesEx": ("token:string", "RetrieveResult"),
    "CancelRetrievePropertiesEx": ("token:string", None),
    "FindChild": ("entity:MoRef name:string", "MoRef?"),
    "FindByInventoryPath": ("inventoryPath:string", "MoRef?"),
    # GuestFileManager
    "ListFilesInGuest": (_GUEST + "filePath:string index:int? maxResults:int? matchPattern:string?",
                         "GuestListFileInfo"),
    "InitiateFileTransferFromGuest": (_GUEST + "guestFilePath:string", "FileTransferInformation"),
    "InitiateFileTransferToGuest": (_GUEST + "guestFilePath:string fileAttributes:GuestFileAttributes fileSize:long "
                                             "overwrite:boolean", "string"),
    "MakeDirectoryInGuest": (_GUEST + "directoryPath:string createParentDirectories:boolean", None),
    "DeleteFileInGuest": (_GUEST + "filePath:string", None),
    "DeleteDirectoryInGuest": (_GUEST + "directoryPath:string recursive:boolean", None),
    "MoveFileInGuest": (_GUEST + "srcFilePath:string dstFilePath:string overwrite:boolean", None),
    "MoveDirectoryInGuest": (_GUEST + "srcDirectoryPath:string dstDirectoryPath:string", None),
    "ChangeFileAttributesInGuest": (_GUEST + "guestFilePath:string fileAttributes:GuestFileAttributes", None),
    "CreateTemporaryFileInGuest": (_GUEST + "prefix:string suffix:string directoryPath:string?", "string"),
    "CreateTemporaryDirectoryInGuest": (_GUEST + "prefix:string suffix:string directoryPath:string?", "string"),
    # GuestProcessManager
    "StartProgramInGuest": (_GUEST + "spec:GuestProgramSpec", "long"),
    "ListProcessesInGuest": (_GUEST + "pids:long[]?", "GuestProcessInfo[]?"),
    "TerminateProcessInGuest": (_GUEST + "pid:long", None),
    "ReadEnvironmentVariableInGuest": (_GUEST + "names:string[]?", "string[]?"),
    # A property read, as pyVmomi reads `vm.runtime` and vCenter and ESXi serve it: not in the WSDL; its result has
    # the property's type (PROPERTIES), like VI/JSON's GET of a property.
    "Fetch": ("prop:string", "any"),
}

# (managed object type, property) -> the property's type, for Fetch; other properties decode by what they carry
_PROPERTIES: dict[tuple[str, str], str] = {
    ("GuestOperationsManager", "fileManager"): "MoRef?",
    ("GuestOperationsManager", "processManager"): "MoRef?",
    ("SessionManager", "currentSession"): "UserSession?",
    ("ContainerView", "view"): "MoRef[]?",
    ("VirtualMachine", "name"): "string",
    ("VirtualMachine", "runtime"): "VirtualMachineRuntimeInfo",
    ("HostSystem", "name"): "string",
    ("HostSystem", "config"): "HostConfigInfo?",
}


class Slot:
    """A declared type: `type_name` (an alias resolved), whether it is an array, whether it may be left out."""

    __slots__ = ("type_name", "array", "optional")

    def __init__(self, spec: str):
        self.optional = spec.endswith("?")
        name = spec.rstrip("?")
        self.array = name.endswith("[]")
        name = name[:-2] if self.array else name
        self.type_name = _ALIASES.get(name, name)

    def __repr__(self) -> str:
        return f"{self.type_name}{'[]' if self.array else ''}{'?' if self.optional else ''}"


def _fields(spec: str) -> tuple[tuple[str, Slot], ...]:
    return tuple((name, Slot(kind)) for name, _, kind in (f.partition(":") for f in spec.split()))


TYPES: dict[str, tuple[str | None, tuple[tuple[str, Slot], ...]]] = {
    name: (base, _fields(own)) for name, (base, own) in _TYPES.items()
}
METHODS: dict[str, tuple[tuple[tuple[str, Slot], ...], Slot | None]] = {
    name: (_fields(params), Slot(result) if result else None) for name, (params, result) in _METHODS.items()
}
PROPERTIES: dict[tuple[str, str], Slot] = {key: Slot(kind) for key, kind in _PROPERTIES.items()}


@lru_cache(maxsize=None)
def fields(type_name: str) -> tuple[tuple[str, Slot], ...]:
    """Every field of a data type, inherited ones first (the wire order); () for a type not in the table."""
    chain = []
    kind: str | None = type_name
    while kind in TYPES:
        base, own = TYPES[kind]
        chain.append(own)
        kind = base
    return tuple(f for own in reversed(chain) for f in own)


@lru_cache(maxsize=None)
def field_slots(type_name: str) -> dict[str, Slot]:
    """`fields()` by name (answers are decoded by field name)."""
    return dict(fields(type_name))


def is_data_type(type_name: str | None) -> bool:
    return type_name in TYPES


def array_item(array_type: str) -> str:
    """`ArrayOfGuestFileInfo` -> GuestFileInfo, `ArrayOfByte` -> byte: the item type, also the items' tag."""
    item = array_type[len("ArrayOf"):]
    lowered = item[:1].lower() + item[1:]
    if lowered in PRIMITIVES:
        return lowered
    return _ALIASES.get(item, item)
