"""What to do about a failure the client reported: the privileges vCenter says are missing (the client's
NoPermission and REST 403 messages name them), and advice by the kind of failure."""

from __future__ import annotations

import re

from guestfs_mount.vsphere.faults import ConnectionFailed, GuestFileError, GuestLoginError, VMUnavailableError

# "...; the vCenter user lacks A, B on this VM" (VI NoPermission), "... lacks A on the VM (...)" (REST 403)
_LACKS = re.compile(r"lacks ((?:[A-Za-z]+\.)+[A-Za-z]+(?:, (?:[A-Za-z]+\.)+[A-Za-z]+)*)")
PRIVILEGE_FAULTS = ("NoPermission", "UNAUTHORIZED")
# the names the vSphere Client shows for them (Roles > Virtual machine > Guest operations)
CLIENT_NAMES = {
    "VirtualMachine.GuestOperations.Query": "Guest operation queries",
    "VirtualMachine.GuestOperations.Modify": "Guest operation modifications",
    "VirtualMachine.GuestOperations.Execute": "Guest operation program execution",
}
TOOLS = ("start VMware Tools in the guest (open-vm-tools: systemctl start vmtoolsd) and check that guest "
         "operations are not disabled in its tools.conf")


def missing_privileges(error: BaseException) -> list[str]:
    """The vCenter privileges a refusal names, if the refusal is vCenter's."""
    if getattr(error, "fault", None) not in PRIVILEGE_FAULTS:
        return []
    found: list[str] = []
    for group in _LACKS.findall(str(error)):
        found += [p for p in group.split(", ") if p not in found]
    return found


def grant(privileges: list[str], where: str = "this VM") -> str:
    names = ", ".join(f"{p} ({CLIENT_NAMES[p]})" if p in CLIENT_NAMES else p for p in privileges)
    return (f"grant the vCenter user {names} on {where}, or on a folder above it, in a role of its own "
            f"(vSphere Client: Administration > Roles, then Permissions on the VM)")


def before_the_guest(error: BaseException) -> bool:
    """Whether vCenter refused the call before the guest saw it (so the guest login was not tried): a missing
    privilege, a VM that is off or has no Tools running, our session, a transport failure."""
    return (bool(missing_privileges(error)) or isinstance(error, (VMUnavailableError, ConnectionFailed))
            or getattr(error, "fault", None) in ("NotAuthenticated", "ManagedObjectNotFound"))


def for_guest_error(error: BaseException, login: str) -> str | None:
    """Advice for a failed guest call; `login` names the [vms.*] table used."""
    privileges = missing_privileges(error)
    if privileges:
        also = " (REST answers alike when the guest user may not do it)" if error.fault == "UNAUTHORIZED" else ""
        return grant(privileges) + also
    if isinstance(error, GuestLoginError):
        return (f"check username and password of {login}: that account must be able to log in inside the guest "
                f'(a domain account is written username = "DOMAIN\\\\user")')
    if isinstance(error, VMUnavailableError):
        return "power the VM on" if "PowerState" in str(error) or "CURRENT_STATE" in str(error) else TOOLS
    if isinstance(error, ConnectionFailed):
        return "check the network between this machine and vCenter"
    if isinstance(error, GuestFileError):
        return "see the message: the guest refused the operation"
    return None


def for_transfer(error: BaseException) -> str:
    """Advice when a transfer URL's ESXi host cannot be reached or is not trusted."""
    text = str(error)
    if "does not resolve" in text:
        return ('set [vcenter] transfer_host = "management-ip" (the default: the host\'s management address as '
                'vCenter reports it) or "vcenter" (through vCenter\'s address), or make the host\'s name resolve here')
    if "not the one vCenter reports" in text:
        return ("the host presented another certificate than vCenter holds for it: if it was renewed, reconnect "
                "the host in vCenter; else something between here and the host answers in its name")
    if "not trusted" in text:
        return ("set ca_file to the CA that signed the ESXi hosts' certificates (VMCA: vCenter's root CA, "
                "`guestfs-mount trust URL` writes it)")
    return ("this machine must reach every ESXi host on its HTTPS port (443), not only vCenter: check firewalls and "
            "routes to the host's management network, or use transfer_host = \"vcenter\" with a proxy there")
