"""The benchmark harness runs end to end (`python -m benchmarks --quick --only ttfb`) and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_ttfb_writes_json(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "ttfb", "--json", str(out),
                           "--markdown", str(md), "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ttfb_ratio" in done.stdout  # the table
    assert "| `ttfb_ratio` |" in md.read_text()
    doc = json.loads(out.read_text())
    assert set(doc) >= {"summary", "runs", "machine", "targets", "options"}
    [run] = doc["runs"]
    assert (run["latency_ms"], run["api"]) == (0, "vi-json")
    figures = run["figures"]
    for name in ("mount_ttfb_ms", "raw_ttfb_ms", "ttfb_ratio", "mount_ttfb_listed_ms"):
        assert isinstance(figures[name], (int, float)) and figures[name] > 0, name
    assert doc["summary"]["ttfb_ratio"] == figures["ttfb_ratio"]
    assert doc["targets"]["read_ratio"] == {"op": ">=", "value": 0.9}
    machine = doc["machine"]
    for key in ("cpu_model", "cpu_count", "memory_mib", "kernel", "python", "pyfuse3", "httpx", "trio",
                "workdir_filesystem", "date", "git_commit"):
        assert machine.get(key), key
    assert machine["page_cache_new_s_per_gib"] > 0 and machine["page_cache_held_s_per_gib"] > 0
    assert "page cache at the start:" in done.stdout
    # the temp dir (mount point, spool, data) is gone, so nothing is still mounted there
    assert not any(p.name.startswith("guestfs-bench-") for p in tmp_path.iterdir())
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_quick_latency_suite_on_a_serial_guest_and_compare(tmp_path):
    out, md = tmp_path / "latency.json", tmp_path / "compare.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--suite", "latency", "--quick", "--only", "cpr",
                           "--api", "rest", "--guest", "serial", "--json", str(out), "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rest 20ms serial" in done.stdout
    [run] = json.loads(out.read_text())["runs"]
    assert (run["api"], run["latency_ms"], run["guest"]) == ("rest", 20, "serial")
    figures = run["figures"]
    assert figures["cpr_files"] == 100 and figures["cpr_sha256_ok"] is True
    assert figures["cpr_calls_per_file"] >= 2  # an initiate and a GET for each file at least
    done = subprocess.run([sys.executable, "-m", "benchmarks.compare", str(out), str(out), "--markdown", str(md)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| rest 20ms serial | `cpr_s` |" in md.read_text() and "1.000" in md.read_text()


def test_rsync_into_the_guest_with_write_back_until_sync(tmp_path):
    out = tmp_path / "rsync.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--suite", "latency", "--quick", "--only", "rsync_in",
                           "--latency-ms", "0", "--api", "vi-json", "--guest", "parallel", "--write-back", "on",
                           "--rsync-files", "20", "--json", str(out), "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vi-json 0ms wb" in done.stdout
    [run] = json.loads(out.read_text())["runs"]
    assert run["write_back"] is True
    figures = run["figures"]
    assert figures["rsync_in_files"] == 20 and figures["rsync_in_checked"] is True
    assert figures["rsync_in_rerun_uploads"] == 0
    # initiate + PUT per file; the rest per directory
    assert figures["rsync_in_calls_by_method"]["InitiateFileTransferToGuest"] == 20
    assert "MoveFileInGuest" not in figures["rsync_in_calls_by_method"]


def test_quick_write_over_tls_reports_cpu_apart(tmp_path):
    """--transport tls: the simulator serves TLS, the mount verifies it by ca_file, the raw side uses the same
    cipher; CPU per GiB comes as user and system apart, for the mount and the simulator."""
    out = tmp_path / "tls.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "write", "--transport", "tls",
                           "--json", str(out), "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vi-json 0ms tls" in done.stdout and "TLS_" in done.stdout
    [run] = json.loads(out.read_text())["runs"]
    assert run["transport"] == "tls" and run["tls"].startswith("TLSv1.")
    figures = run["figures"]
    assert figures["write_ratio"] > 0 and figures["raw_write_curl_mib_s"] > 0
    for who in ("mount_write", "sim_write", "sim_raw_write"):
        user, system = figures[f"{who}_user_s_per_gib"], figures[f"{who}_sys_s_per_gib"]
        assert user >= 0 and system >= 0 and figures[f"{who}_cpu_s_per_gib"] == round(user + system, 2), who
    assert figures["mount_write_cpu_s_per_gib"] > 0


def test_floor_measures_a_null_filesystem_and_unmounts_it():
    done = subprocess.run([sys.executable, "-m", "benchmarks.floor", "--mib", "16", "--repeats", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["pyfuse3 floor, write", "pyfuse3 floor, read "], lines
    for line in lines:
        wall = float(line.split("wall ")[1].split()[0])
        assert 0 < wall < 60, line
    assert "guestfs-floor-" not in Path("/proc/self/mountinfo").read_text()
