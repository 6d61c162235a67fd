"""The Automation REST guest processes (`/api/vcenter/vm/{vm}/guest/processes`, 7.0U2+) over guest programs
(guestprocs.py), counted under the VI method names: `?action=create` is StartProgramInGuest, `{pid}?action=get`
and `?action=list` are ListProcessesInGuest. Credentials travel in the body, as for the guest filesystem."""

from __future__ import annotations

from .faults import SimFault
from .rest import RestError, guest_login
from .state import Simulator, iso


def processes(h, sim: Simulator, token, vm_id: str, sub: list[str], action: str):
    body = h.read_json()
    if not isinstance(body, dict):
        raise RestError(400, "INVALID_ARGUMENT", "the request body must be an object")
    if not sub and action == "create":
        vm, fs = guest_login(h, sim, token, vm_id, "StartProgramInGuest", body)
        return 201, _create(h, sim, vm, fs, body.get("spec") or {}), None
    if not sub and action == "list":
        vm, _ = guest_login(h, sim, token, vm_id, "ListProcessesInGuest", body)
        return 200, [_summary(p) for p in sim.programs.processes(vm.name, None)], None
    if len(sub) == 1 and action == "get":
        vm, _ = guest_login(h, sim, token, vm_id, "ListProcessesInGuest", body)
        try:
            pid = int(sub[0])
        except ValueError:
            raise RestError(400, "INVALID_ARGUMENT", f"bad pid {sub[0]!r}") from None
        found = sim.programs.processes(vm.name, [pid])
        if not found:
            raise RestError(404, "NOT_FOUND", f"process {pid} not found", {"data": {"pid": pid}})
        p = found[0]
        info = {key: value for key, value in _summary(p).items() if key != "pid"}
        if p.end_time is not None:
            info.update(finished=iso(p.end_time), exit_code=p.exit_code)
        return 200, info, None
    raise RestError(404, "NOT_FOUND", f"no such operation: processes {'/'.join(sub)}?action={action}")


def _create(h, sim: Simulator, vm, fs, spec: dict) -> int:
    h.guest_path = spec.get("path") or ""
    env = spec.get("environment_variables")
    if env is not None and (not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values())):
        raise SimFault("InvalidArgument", "environment_variables must map names to strings")
    if spec.get("start_minimized") and not vm.windows:
        raise SimFault("InvalidArgument", "start_minimized is for Windows guests")
    return sim.programs.start(vm.name, fs, sim.settings.guest_user, spec.get("path"), spec.get("arguments"), env,
                              spec.get("working_directory") or None)


def _summary(p) -> dict:
    return {"name": p.name, "pid": p.pid, "owner": p.owner, "command": p.cmd_line, "started": iso(p.start_time)}
