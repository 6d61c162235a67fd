"""`guestfs-mount status MOUNTPOINT [--json]`: a running mount's transfers in flight, its queued and failed
uploads (write_back), and its figures."""

from __future__ import annotations

import argparse
import json
import sys

from guestfs_mount.cli.control import NotRunning, ask

STATUS_TIMEOUT = 5.0  # seconds to wait for a running mount's status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guestfs-mount status",
        description="Show a running mount's live transfers, queued and failed uploads, and cache figures.",
    )
    parser.add_argument("mountpoint", help="where guestfs-mount is mounted")
    parser.add_argument("--json", action="store_true", help="print the mount's status document as JSON")
    args = parser.parse_args(argv)
    try:
        status = ask(args.mountpoint, {"op": "status"}, STATUS_TIMEOUT)
    except NotRunning as e:
        print(f"guestfs-mount: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"guestfs-mount: cannot read the status of the mount at {args.mountpoint}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_status(status: dict) -> str:
    """The status document as a table of transfers, then the figures."""
    lines = [f"guestfs-mount at {status.get('mountpoint')}: pid {status.get('pid')}, "
             f"{status.get('dialect')} dialect, up {status.get('uptime_s', 0):.0f} s"]
    if "error" in status:
        lines.append(f"error: {status['error']}")
    transfers = status.get("transfers") or []
    if not transfers:
        lines.append("no transfers in flight")
    else:
        rows = [("VM", "PATH", "DIRECTION", "DONE/TOTAL MiB", "%", "MiB/s")]
        for t in transfers:
            total = t.get("total")
            done = t.get("done", 0)
            rows.append((str(t.get("vm")), str(t.get("path")), str(t.get("direction")),
                         f"{_mib(done)}/{_mib(total) if total is not None else '?'}",
                         f"{100 * done / total:.0f}" if total else "-", _mib(t.get("rate_bps", 0))))
        lines += _table(rows)
    uploads = status.get("uploads") or {}
    pending, failed = uploads.get("pending") or [], uploads.get("failed") or []
    if pending:
        lines += ["", f"{len(pending)} upload(s) queued (write_back; `guestfs-mount sync` waits for them):"]
        lines += _table([("PATH", "BYTES", "AGE S", "ATTEMPTS", "STATE")] + [
            (str(p.get("path")), str(p.get("bytes")), f"{p.get('age_s', 0):.0f}", str(p.get("attempts", 0)),
             str(p.get("state")) + (f" ({p['last_error']})" if p.get("last_error") else "")) for p in pending])
    if failed:
        lines += ["", f"{len(failed)} upload(s) failed; their content is in the recovery directory:"]
        lines += _table([("PATH", "ERROR", "KEPT IN")] + [
            (str(f.get("path")), str(f.get("error")), str(f.get("kept") or "(not kept)")) for f in failed])
    figures = status.get("figures") or {}
    if figures:
        lines.append("")
        width = max(len(k) for k in figures)
        lines += [f"{key.replace('_', ' ').ljust(width)}  {value}" for key, value in figures.items()]
    return "\n".join(lines)
