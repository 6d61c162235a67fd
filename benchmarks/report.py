"""Targets, machine facts, the printed table and the JSON document."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from benchmarks.data import filesystem_of
from benchmarks.rig import REPO

# figure -> (comparison, value), from issue #8
TARGETS = {
    "read_ratio": (">=", 0.9),
    "write_ratio": (">=", 0.8),
    "ttfb_ratio": ("<=", 1.5),
    "list_warm_calls": ("==", 0),
    "rsync_calls_per_file": ("<=", 4),
    "peak_rss_mib": ("<=", 150),
    "rsync_rerun_uploads": ("==", 0),
    "rsync_in_rerun_uploads": ("==", 0),
    # the latency suite (issue #13)
    "reread_again_transfers": ("==", 0),
    "reread_after_ttl_transfers": ("==", 0),
    "reread_changed_new_bytes": ("==", True),
    "cache_fill_peak_rss_mib": ("<=", 150),
}

# what the summary and the table lead with
HEADLINE = ["read_ratio", "write_ratio", "ttfb_ratio", "parallel_read_ratio", "parallel_write_ratio",
            "list_calls", "list_warm_calls", "list_cold_s", "list_warm_s", "rsync_calls_per_file",
            "rsync_rerun_uploads", "peak_rss_mib", "mount_read_mib_s", "raw_read_mib_s", "mount_write_mib_s",
            "raw_write_mib_s", "mount_ttfb_ms", "raw_ttfb_ms"]


def meets(name: str, value) -> bool | None:
    if name not in TARGETS or value is None:
        return None
    op, target = TARGETS[name]
    return {">=": value >= target, "<=": value <= target, "==": value == target}[op]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cmd(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else None


def export_commit(rev: str, into: Path) -> None:
    """`git archive REV guestfs_mount | tar -x -C INTO`: the package as of a commit, the work tree untouched."""
    archive = subprocess.run(["git", "archive", rev, "guestfs_mount"], cwd=REPO, capture_output=True, timeout=60)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)


PROBE_MIB = 256


def page_cache_cost(workdir: Path) -> dict:
    """Seconds per GiB to write into page cache the kernel must find anew (a new file) and into pages a file holds
    (the same file again). On a VM that hands freed memory back to its host (virtio-balloon free page reporting) the
    first is 10-20 times the second, and whichever side of a case touches new pages first pays it: read the ratios
    of a run beside these (docs/performance.md, "Spare spool")."""
    path = workdir / "page-cache-probe"
    block = os.urandom(1 << 20)
    seconds = []
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(2):
                start = time.perf_counter()
                for i in range(PROBE_MIB):
                    os.pwrite(fd, block, i << 20)
                seconds.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    finally:
        path.unlink(missing_ok=True)
    per_gib = 1024 / PROBE_MIB
    return {"page_cache_new_s_per_gib": round(seconds[0] * per_gib, 2),
            "page_cache_held_s_per_gib": round(seconds[1] * per_gib, 2)}


def machine_facts(workdir: Path, product: Path = REPO, commit: str | None = None) -> dict:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or None)
    meminfo = _read("/proc/meminfo")
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    dirty = _git("status", "--porcelain", "--", "guestfs_mount") if product == REPO else ""
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "memory_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyfuse3": _version("pyfuse3"),
        "httpx": _version("httpx"),
        "httpcore": _version("httpcore"),
        "trio": _version("trio"),
        "libfuse": _cmd(["fusermount3", "-V"]),
        "curl": " ".join((_cmd(["curl", "--version"]) or "").split()[:2]) or None,
        "rsync": " ".join((_cmd(["rsync", "--version"]) or "").split()[:3]) or None,
        "workdir": str(workdir),
        "workdir_filesystem": filesystem_of(workdir),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),  # of the work tree (the harness)
        # what was measured: the work tree's package, an export of a commit (--commit), or a directory (--product)
        "product_commit": _git("rev-parse", commit) if commit else (_git("rev-parse", "HEAD") if product == REPO else None),
        "guestfs_mount_modified": bool(dirty),  # uncommitted changes in guestfs_mount/ at the time of the run
        "product": str(product),  # where the measured guestfs_mount package came from (--product)
        "loadavg_start": _read("/proc/loadavg").split()[:3],
        **page_cache_cost(workdir),
    }


def document(runs: list[dict], machine: dict, options: dict) -> dict:
    first = runs[0] if runs else None
    headline = next((r for r in runs if r["latency_ms"] == 0 and first and r["api"] == first["api"]), first)
    summary = {}
    if headline:
        summary = {"latency_ms": headline["latency_ms"], "api": headline["api"]}
        summary.update({k: headline["figures"][k] for k in HEADLINE if k in headline["figures"]})
    return {
        "summary": summary,
        "runs": runs,
        "machine": machine,
        "targets": {name: {"op": op, "value": value} for name, (op, value) in TARGETS.items()},
        "options": options,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: -kv[1]))
    return "-" if value is None else str(value)


def _rows(doc: dict) -> list[list[str]]:
    """Figures as rows, one column per run (latency/dialect), then target and whether every run meets it."""
    runs = doc["runs"]
    names: list[str] = []
    for run in runs:
        for name in run["figures"]:
            if name not in names and not isinstance(run["figures"][name], dict):
                names.append(name)
    seen = {n: i for i, n in enumerate(names)}
    names.sort(key=lambda n: (HEADLINE.index(n) if n in HEADLINE else len(HEADLINE), seen[n]))
    heads = [label(r) for r in runs]
    rows = [["figure", *heads, "target", "ok?"]]
    for name in names:
        values = [r["figures"].get(name) for r in runs]
        target = " ".join(str(x) for x in TARGETS[name]) if name in TARGETS else ""
        oks = [meets(name, v) for v in values if v is not None]
        ok = "" if not target or not oks else ("yes" if all(oks) else "NO")
        cells = [_fmt(v) + ("!" if meets(name, v) is False else "") for v in values]  # "!": misses the target
        rows.append([name, *cells, target, ok])
    return rows


def label(run: dict) -> str:
    """A run's column: dialect, latency, the simulated guest when it is the serial one, tls over TLS, "wb" with
    write_back."""
    guest = " serial" if run.get("guest") == "serial" else ""
    tls = " tls" if run.get("transport") == "tls" else ""
    return f"{run['api']} {run['latency_ms']}ms{guest}{tls}" + (" wb" if run.get("write_back") else "")


def _ciphers(doc: dict) -> list[str]:
    return [f"{label(run)}: {run['tls']}" for run in doc["runs"] if run.get("tls")]


def _by_method(doc: dict) -> list[str]:
    return [f"{label(run)} {name}: {_fmt(value)}"
            for run in doc["runs"] for name, value in run["figures"].items() if isinstance(value, dict)]


def table(doc: dict) -> str:
    """The console table."""
    if not doc["runs"]:
        return "no runs"
    rows = _rows(doc)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    extra = ["  " + line for line in _by_method(doc)]
    errors = [f"  {label(r)} {case}: {e}" for r in doc["runs"] for case, e in r.get("errors", {}).items()]
    tls = ["  " + line for line in _ciphers(doc)]
    return "\n".join(lines + (["", "calls by method:"] + extra if extra else []) + (["", "TLS:"] + tls if tls else [])
                     + (["", "errors:"] + errors if errors else []) + ["", page_cache_line(doc["machine"])])


def page_cache_line(machine: dict) -> str:
    new, held = machine.get("page_cache_new_s_per_gib"), machine.get("page_cache_held_s_per_gib")
    return f"page cache at the start: {new} s per GiB written into new pages, {held} over pages a file holds"


def markdown(doc: dict) -> str:
    """The table, the calls by method and the machine as Markdown, for docs/performance.md."""
    if not doc["runs"]:
        return "no runs\n"
    rows = _rows(doc)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |" for row in rows[1:]]
    out += ["", "Guest calls by method:", ""] + [f"- {line}" for line in _by_method(doc)]
    if _ciphers(doc):
        out += ["", "TLS (negotiated by the raw side; the mount uses the same OpenSSL defaults):", ""]
        out += [f"- {line}" for line in _ciphers(doc)]
    m = doc["machine"]
    out += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in m.items() if k not in ("workdir", "product")) + "."]
    return "\n".join(out) + "\n"


def write_json(doc: dict, path: str) -> None:
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
