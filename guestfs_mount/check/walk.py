"""`guestfs-mount check`, the whole path in order: vCenter (vcenter.py), then the VMs to try (named with --vm, or
the first powered-on one of each [vms.*] table among those the mount would show, Tools running preferred), each
one's guest path (guest.py)."""

from __future__ import annotations

from guestfs_mount.check import guest, vcenter
from guestfs_mount.check.report import Report
from guestfs_mount.config import Config, ConfigError, VMLogin, guest_credentials, match_login
from guestfs_mount.vsphere.guestfiles import ClientConfig
from guestfs_mount.vsphere.model import VMInfo


async def walk(report: Report, config: Config, client_config: ClientConfig, named: tuple[str, ...],
               shown: tuple[str, ...], write: bool) -> None:
    """`named`: --vm; `shown`: the VMs the mount would show (--vm, else [mount] vms; empty: all)."""
    url = client_config.url
    if not await vcenter.url_answers(report, client_config):
        return _skip(report, ["tls", "api", "login", "vcenter", "vms"], "vCenter's address does not answer")
    if not await vcenter.tls_trusted(report, client_config, url):
        return _skip(report, ["api", "login", "vcenter", "vms"], "vCenter's certificate is not trusted")
    client = await vcenter.connect_client(report, client_config)
    if client is None:
        return _skip(report, ["vms"], "no session")
    try:
        vms = await vcenter.list_vms(report, client, shown)
        if vms is None:
            return
        pool = [vm for vm in vms if vm.name in shown] if shown and not named else vms
        for vm, login in _choose(report, config, pool, named):
            await guest.check_vm(report, client, vm, login, write)
    finally:
        await vcenter.close(client)


def _skip(report: Report, step_ids: list[str], why: str) -> None:
    for step_id in step_ids:
        report.skip(step_id, why)


def _choose(report: Report, config: Config, vms: list[VMInfo], named: tuple[str, ...]):
    """(VM, its guest login) to try, reporting what cannot be tried."""
    by_name = {vm.name: vm for vm in vms}
    if named:
        picked = []
        for name in named:
            if name not in by_name:
                report.fail("vm", "not in vCenter's inventory (or not visible to this user)",
                            "VM names are the inventory names vCenter shows, case included", vm=name)
            else:
                picked.append(by_name[name])
    else:
        picked = _one_per_table(report, config, sorted(vms, key=lambda v: v.name))
    chosen = []
    for vm in picked:
        try:
            creds = guest_credentials(config, vm.name)
        except ConfigError as e:
            report.fail("credentials", str(e), "fix the [vms.*] table this VM uses", vm=vm.name)
            continue
        login = match_login(config.vm_logins, vm.name)
        assert login is not None
        chosen.append((vm, guest.Login(_table(login), creds, login.exec)))
    return chosen


def _table(login: VMLogin) -> str:
    return "[vms.default]" if login.pattern == "default" else f'[vms."{login.pattern}"]'


def _one_per_table(report: Report, config: Config, vms: list[VMInfo]) -> list[VMInfo]:
    if not config.vm_logins:
        report.fail("credentials", "the config has no [vms.*] table: no guest login to try",
                    f"add [vms.default] (or [vms.\"<glob>\"]) with username and a password to {config.path}")
        return []
    picked: list[VMInfo] = []
    for login in config.vm_logins:
        uses = [vm for vm in vms if match_login(config.vm_logins, vm.name) is login]
        on = [vm for vm in uses if vm.powered_on]
        if not uses:
            report.skip("credentials", f"{_table(login)}: no VM uses this login")
        elif not on:
            report.warn("credentials", f"{_table(login)}: none of its {len(uses)} VMs is powered on: its login is "
                        f"not tried", "power one on, or name one with --vm, to try this login")
        else:
            picked.append(next((vm for vm in on if vm.tools_ready), on[0]))
    if not picked:
        report.fail("credentials", "no powered-on VM to try a guest login on",
                    "power a VM on, or name one with --vm NAME")
    return picked
