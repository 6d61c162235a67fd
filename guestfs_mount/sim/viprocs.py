"""The VI/JSON GuestProcessManager methods: request bodies in, guest programs (guestprocs.py), VI data objects out.
Same signature as the GuestFileManager methods of viguest.py, so any encoding of VI bodies can call them."""

from __future__ import annotations

from .faults import SimFault
from .state import iso

def _start_program(h, sim, vm, fs, body):
    spec = body.get("spec") or {}
    h.guest_path = spec.get("programPath") or ""
    env = spec.get("envVariables")
    if env is not None:
        if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
            # the agent's VixToolsValidateEnviron: every entry NAME=value
            raise SimFault("InvalidArgument", "envVariables must be NAME=value strings", invalidProperty="envVariables")
        env = dict(e.split("=", 1) for e in env)
    if not isinstance(spec.get("arguments", ""), str):
        raise SimFault("InvalidArgument", "arguments must be a string", invalidProperty="arguments")
    pid = sim.programs.start(vm.name, fs, sim.settings.guest_user, spec.get("programPath"), spec.get("arguments"),
                             env, spec.get("workingDirectory") or None)
    return 200, pid


def _list_processes(h, sim, vm, fs, body):
    pids = body.get("pids")
    if pids is not None and (not isinstance(pids, list) or not all(isinstance(p, int) for p in pids)):
        raise SimFault("InvalidArgument", "pids must be a list of integers", invalidProperty="pids")
    found = [
        {"_typeName": "GuestProcessInfo", "name": p.name, "pid": p.pid, "owner": p.owner, "cmdLine": p.cmd_line,
         "startTime": iso(p.start_time),
         **({"endTime": iso(p.end_time), "exitCode": p.exit_code} if p.end_time is not None else {})}
        for p in sim.programs.processes(vm.name, pids)
    ]
    return (200, found) if found else (204, None)  # an unset array is omitted, as vCenter does


PROCESS_METHODS = {"StartProgramInGuest": _start_program, "ListProcessesInGuest": _list_processes}
