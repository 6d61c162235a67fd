"""The /_sim control endpoints (plain JSON, no auth): power, Tools, latency, transfer throttle, migration, planned
faults, privileges, session expiry and rotation, call counts."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .inventory import POWER_STATES
from .state import PRIVILEGE_PREFIX, PRIVILEGES, Simulator


def handle(h, sim: Simulator) -> None:
    seg = [unquote(s) for s in urlsplit(h.path).path.split("/")[2:]]
    h.op = "_sim/" + "/".join(seg[:1] + seg[2:])
    if h.command == "GET" and seg == ["stats"]:
        h.send_json(200, {"calls": sim.stats()})
        return
    if h.command != "POST":
        h.send_json(404, {"error": "unknown control endpoint"})
        return
    body = h.read_json()
    if not isinstance(body, dict):
        h.send_json(400, {"error": "the body must be a JSON object"})
        return
    if seg == ["stats", "reset"]:
        sim.reset_stats()
    elif seg == ["sessions", "expire"]:
        sim.sessions.expire_all()
    elif seg == ["sessions", "rotate"]:
        sim.sessions.rotate_all()
    elif seg == ["privileges"]:
        withheld = body.get("withhold", [])
        short = [str(p).removeprefix(PRIVILEGE_PREFIX) for p in withheld] if isinstance(withheld, list) else None
        if short is None or any(p not in PRIVILEGES for p in short):
            h.send_json(400, {"error": f"withhold must be a list of {', '.join(PRIVILEGES)}"})
            return
        sim.withheld[str(body.get("user") or sim.settings.vc_user)] = set(short)
    elif seg == ["faults"]:
        if not body.get("operation") or not body.get("fault"):
            h.send_json(400, {"error": "operation and fault are required"})
            return
        sim.faults.add(body["operation"], body["fault"], int(body.get("times", 1)), body.get("vm"))
    elif len(seg) == 3 and seg[0] == "vms" and seg[2] in ("power", "tools", "latency", "throttle", "migrate"):
        vm = sim.inventory.by_name(seg[1])
        h.vm_name = seg[1]
        if vm is None:
            h.send_json(404, {"error": f"no VM {seg[1]}"})
            return
        if seg[2] == "power":
            if body.get("state") not in POWER_STATES:
                h.send_json(400, {"error": f"state must be one of {POWER_STATES}"})
                return
            sim.set_power(vm, body["state"])
        elif seg[2] == "latency":
            vm.latency_ms = max(0, int(body.get("ms", 0)))
        elif seg[2] == "throttle":
            vm.throttle_bps = max(0, int(body.get("bytes_per_s", 0)))
        elif seg[2] == "migrate":
            host = sim.hosts.find(body["host"]) if body.get("host") else sim.hosts.next_after(vm.host)
            if host is None:
                h.send_json(404, {"error": f"no host {body.get('host')}"})
                return
            sim.migrate(vm, host)
        else:
            vm.tools_running = bool(body.get("running"))
    else:
        h.send_json(404, {"error": "unknown control endpoint"})
        return
    h.send_empty(204)
