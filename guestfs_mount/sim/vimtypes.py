"""The slice of the vim25 schema the simulator's SOAP encoding needs, taken from pyVmomi's type info (8.0.3.0).

XML carries no type on a value whose type the WSDL declares (`<index>3</index>` is an int, `<overwrite>` a boolean,
repeated `<files>` an array), so decoding a request needs each parameter's and field's declared type, and encoding a
reply needs them to know where `xsi:type` must be written (wherever the value's type is not the declared one).

Type notation: a name (`string`, `long`, `ManagedObjectReference`, `anyType`, a data type, an enum), `[]` for an
array, a trailing `?` for optional. Request types list every field; reply types list the fields the simulator serves,
in WSDL order (the encoder writes other keys of a value after them). tests/test_sim_soap_types.py checks every entry
against pyVmomi.
"""

from __future__ import annotations

# xsd types and the vmodl names that travel as strings
PRIMITIVES = {
    "string", "boolean", "byte", "short", "int", "long", "float", "double", "dateTime", "base64Binary", "anyURI",
    "TypeName", "PropertyPath", "MethodName",
}
MOREF = "ManagedObjectReference"
ANY = "anyType"

# data type -> (base type or None, ((field, type), ...)), own fields only; a base's fields come first on the wire
DATA_TYPES: dict[str, tuple[str | None, tuple[tuple[str, str], ...]]] = {
    "DataObject": (None, ()),
    "DynamicData": ("DataObject", (("dynamicType", "string?"), ("dynamicProperty", "DynamicProperty[]?"))),
    "DynamicProperty": ("DataObject", (("name", "PropertyPath"), ("val", "anyType"))),
    # ---- requests: the PropertyCollector
    "PropertyFilterSpec": ("DynamicData", (
        ("propSet", "PropertySpec[]"), ("objectSet", "ObjectSpec[]"), ("reportMissingObjectsInResults", "boolean?"),
    )),
    "PropertySpec": ("DynamicData", (("type", "TypeName"), ("all", "boolean?"), ("pathSet", "PropertyPath[]?"))),
    "ObjectSpec": ("DynamicData", (
        ("obj", "ManagedObjectReference"), ("skip", "boolean?"), ("selectSet", "SelectionSpec[]?"),
    )),
    "SelectionSpec": ("DynamicData", (("name", "string?"),)),
    "TraversalSpec": ("SelectionSpec", (
        ("type", "TypeName"), ("path", "PropertyPath"), ("skip", "boolean?"), ("selectSet", "SelectionSpec[]?"),
    )),
    "RetrieveOptions": ("DynamicData", (("maxObjects", "int?"),)),
    # ---- requests: guest operations
    "GuestAuthentication": ("DynamicData", (("interactiveSession", "boolean"),)),
    "NamePasswordAuthentication": ("GuestAuthentication", (("username", "string"), ("password", "string"))),
    "SAMLTokenAuthentication": ("GuestAuthentication", (("token", "string"), ("username", "string?"))),
    "SSPIAuthentication": ("GuestAuthentication", (("sspiToken", "string"),)),
    "TicketedSessionAuthentication": ("GuestAuthentication", (("ticket", "string"),)),
    "GuestFileAttributes": ("DynamicData", (
        ("modificationTime", "dateTime?"), ("accessTime", "dateTime?"), ("symlinkTarget", "string?"),
    )),
    "GuestPosixFileAttributes": ("GuestFileAttributes", (("ownerId", "int?"), ("groupId", "int?"), ("permissions", "long?"))),
    "GuestWindowsFileAttributes": ("GuestFileAttributes", (
        ("hidden", "boolean?"), ("readOnly", "boolean?"), ("createTime", "dateTime?"),
    )),
    "GuestProgramSpec": ("DynamicData", (
        ("programPath", "string"), ("arguments", "string"), ("workingDirectory", "string?"), ("envVariables", "string[]?"),
    )),
    "GuestWindowsProgramSpec": ("GuestProgramSpec", (("startMinimized", "boolean"),)),
    # ---- replies
    "ServiceContent": ("DynamicData", (
        ("rootFolder", "ManagedObjectReference"), ("propertyCollector", "ManagedObjectReference"),
        ("viewManager", "ManagedObjectReference?"), ("about", "AboutInfo"), ("setting", "ManagedObjectReference?"),
        ("userDirectory", "ManagedObjectReference?"), ("sessionManager", "ManagedObjectReference?"),
        ("searchIndex", "ManagedObjectReference?"), ("fileManager", "ManagedObjectReference?"),
        ("guestOperationsManager", "ManagedObjectReference?"),
    )),
    "AboutInfo": ("DynamicData", (
        ("name", "string"), ("fullName", "string"), ("vendor", "string"), ("version", "string"), ("patchLevel", "string?"),
        ("build", "string"), ("localeVersion", "string?"), ("localeBuild", "string?"), ("osType", "string"),
        ("productLineId", "string"), ("apiType", "string"), ("apiVersion", "string"), ("instanceUuid", "string?"),
        ("licenseProductName", "string?"), ("licenseProductVersion", "string?"),
    )),
    "UserSession": ("DynamicData", (
        ("key", "string"), ("userName", "string"), ("fullName", "string"), ("loginTime", "dateTime"),
        ("lastActiveTime", "dateTime"), ("locale", "string"), ("messageLocale", "string"), ("extensionSession", "boolean"),
        ("ipAddress", "string"), ("userAgent", "string"), ("callCount", "long"),
    )),
    "ObjectContent": ("DynamicData", (
        ("obj", "ManagedObjectReference"), ("propSet", "DynamicProperty[]?"), ("missingSet", "MissingProperty[]?"),
    )),
    "MissingProperty": ("DynamicData", (("path", "PropertyPath"), ("fault", "MethodFault"))),
    "RetrieveResult": ("DynamicData", (("token", "string?"), ("objects", "ObjectContent[]"))),
    "GuestListFileInfo": ("DynamicData", (("files", "GuestFileInfo[]?"), ("remaining", "int"))),
    "GuestFileInfo": ("DynamicData", (
        ("path", "string"), ("type", "string"), ("size", "long"), ("attributes", "GuestFileAttributes"),
    )),
    "FileTransferInformation": ("DynamicData", (("attributes", "GuestFileAttributes"), ("size", "long"), ("url", "string"))),
    "GuestProcessInfo": ("DynamicData", (
        ("name", "string"), ("pid", "long"), ("owner", "string"), ("cmdLine", "string"), ("startTime", "dateTime"),
        ("endTime", "dateTime?"), ("exitCode", "int?"),
    )),
    "VirtualMachineRuntimeInfo": ("DynamicData", (
        ("host", "ManagedObjectReference?"), ("connectionState", "VirtualMachineConnectionState"),
        ("powerState", "VirtualMachinePowerState"),
    )),
    "GuestInfo": ("DynamicData", (
        ("toolsRunningStatus", "string?"), ("guestId", "string?"), ("guestFamily", "string?"),
        ("guestFullName", "string?"), ("hostName", "string?"), ("ipAddress", "string?"), ("guestState", "string"),
        ("guestOperationsReady", "boolean?"), ("interactiveGuestOperationsReady", "boolean?"),
    )),
    "VirtualMachineConfigInfo": ("DynamicData", (
        ("name", "string"), ("uuid", "string"), ("instanceUuid", "string?"), ("template", "boolean"), ("guestId", "string"),
    )),
    "HostConfigInfo": ("DynamicData", (
        ("host", "ManagedObjectReference"), ("product", "AboutInfo"), ("certificate", "byte[]?"),
    )),
    "LocalizableMessage": ("DynamicData", (("key", "string"), ("arg", "KeyAnyValue[]?"), ("message", "string?"))),
    "KeyAnyValue": ("DynamicData", (("key", "string"), ("value", "anyType"))),
    # pyVmomi adds a client-side `msg` (the faultstring), not a field on the wire; faults themselves are encoded
    # from their dicts (faults.SimFault.vi_body) in the order given there
    "MethodFault": ("DynamicData", (("faultCause", "MethodFault?"), ("faultMessage", "LocalizableMessage[]?"))),
}

ENUMS = {"VirtualMachinePowerState", "VirtualMachineConnectionState"}

# method -> (((parameter, type), ...) after _this, result type or None for void)
METHODS: dict[str, tuple[tuple[tuple[str, str], ...], str | None]] = {
    "RetrieveServiceContent": ((), "ServiceContent"),
    "Login": ((("userName", "string"), ("password", "string"), ("locale", "string?")), "UserSession"),
    "Logout": ((), None),
    "CreateContainerView": (
        (("container", "ManagedObjectReference"), ("type", "TypeName[]?"), ("recursive", "boolean")),
        "ManagedObjectReference",
    ),
    "DestroyView": ((), None),
    "RetrieveProperties": ((("specSet", "PropertyFilterSpec[]"),), "ObjectContent[]?"),
    "RetrievePropertiesEx": ((("specSet", "PropertyFilterSpec[]"), ("options", "RetrieveOptions")), "RetrieveResult?"),
    "ContinueRetrievePropertiesEx": ((("token", "string"),), "RetrieveResult"),
    "CancelRetrievePropertiesEx": ((("token", "string"),), None),
    "FindChild": ((("entity", "ManagedObjectReference"), ("name", "string")), "ManagedObjectReference?"),
    "FindByInventoryPath": ((("inventoryPath", "string"),), "ManagedObjectReference?"),
    # A managed property read (pyVmomi's property access; VI/JSON's GET of a property). Not in the WSDL, but
    # served by vCenter and ESXi; its result's type is the property's (PROPERTIES).
    "Fetch": ((("prop", "string"),), ANY),
}

_GUEST = (("vm", "ManagedObjectReference"), ("auth", "GuestAuthentication"))
METHODS.update({
    "ListFilesInGuest": (
        _GUEST + (("filePath", "string"), ("index", "int?"), ("maxResults", "int?"), ("matchPattern", "string?")),
        "GuestListFileInfo",
    ),
    "InitiateFileTransferFromGuest": (_GUEST + (("guestFilePath", "string"),), "FileTransferInformation"),
    "InitiateFileTransferToGuest": (
        _GUEST + (("guestFilePath", "string"), ("fileAttributes", "GuestFileAttributes"), ("fileSize", "long"),
                  ("overwrite", "boolean")),
        "string",
    ),
    "MakeDirectoryInGuest": (_GUEST + (("directoryPath", "string"), ("createParentDirectories", "boolean")), None),
    "DeleteFileInGuest": (_GUEST + (("filePath", "string"),), None),
    "DeleteDirectoryInGuest": (_GUEST + (("directoryPath", "string"), ("recursive", "boolean")), None),
    "MoveFileInGuest": (_GUEST + (("srcFilePath", "string"), ("dstFilePath", "string"), ("overwrite", "boolean")), None),
    "MoveDirectoryInGuest": (_GUEST + (("srcDirectoryPath", "string"), ("dstDirectoryPath", "string")), None),
    "ChangeFileAttributesInGuest": (_GUEST + (("guestFilePath", "string"), ("fileAttributes", "GuestFileAttributes")), None),
    "CreateTemporaryFileInGuest": (_GUEST + (("prefix", "string"), ("suffix", "string"), ("directoryPath", "string?")), "string"),
    "CreateTemporaryDirectoryInGuest": (
        _GUEST + (("prefix", "string"), ("suffix", "string"), ("directoryPath", "string?")), "string",
    ),
    # GuestProcessManager: decoded here so that whatever the shared handlers serve is reachable over SOAP
    "StartProgramInGuest": (_GUEST + (("spec", "GuestProgramSpec"),), "long"),
    "ListProcessesInGuest": (_GUEST + (("pids", "long[]?"),), "GuestProcessInfo[]?"),
    "TerminateProcessInGuest": (_GUEST + (("pid", "long"),), None),
    "ReadEnvironmentVariableInGuest": (_GUEST + (("names", "string[]?"),), "string[]?"),
})

# (managed object type, property) -> the property's type, for Fetch
PROPERTIES: dict[tuple[str, str], str] = {
    ("ServiceInstance", "content"): "ServiceContent",
    ("SessionManager", "currentSession"): "UserSession?",
    ("GuestOperationsManager", "fileManager"): "ManagedObjectReference?",
    ("GuestOperationsManager", "processManager"): "ManagedObjectReference?",
    ("ContainerView", "view"): "ManagedObjectReference[]?",
    ("VirtualMachine", "name"): "string",
    ("VirtualMachine", "runtime"): "VirtualMachineRuntimeInfo",
    ("VirtualMachine", "guest"): "GuestInfo?",
    ("VirtualMachine", "config"): "VirtualMachineConfigInfo?",
    ("HostSystem", "name"): "string",
    ("HostSystem", "config"): "HostConfigInfo?",
    ("Datacenter", "name"): "string",
}


def split(type_spec: str) -> tuple[str, bool, bool]:
    """`"GuestFileInfo[]?"` -> ("GuestFileInfo", is_array=True, optional=True)."""
    optional = type_spec.endswith("?")
    name = type_spec.rstrip("?")
    array = name.endswith("[]")
    return (name[:-2] if array else name), array, optional


def fields(type_name: str) -> list[tuple[str, str]]:
    """All fields of a data type, inherited ones first (the WSDL's order)."""
    chain = []
    t: str | None = type_name
    while t is not None:
        base, own = DATA_TYPES[t]
        chain.append(own)
        t = base
    return [f for own in reversed(chain) for f in own]


def is_subtype(type_name: str, ancestor: str) -> bool:
    t: str | None = type_name
    while t is not None:
        if t == ancestor:
            return True
        t = DATA_TYPES[t][0] if t in DATA_TYPES else None
    return False
