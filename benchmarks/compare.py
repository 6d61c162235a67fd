"""`python -m benchmarks.compare BEFORE.json AFTER.json [--markdown FILE]`: two runs' figures side by side, run by
run (dialect, latency, guest), with after/before for the times and calls: what a change did, e.g. a run with
`--commit main` against one of the work tree."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.report import _fmt, label

# the figures worth comparing, in this order (a figure missing from both runs is left out)
FIGURES = ["list_cold_s", "list_calls", "list_warm_s", "list_warm_calls", "cpr_s", "cpr_calls_per_file",
           "cpr_sha256_ok", "reread_again_transfers", "reread_after_ttl_transfers", "reread_changed_new_bytes",
           "vim_s", "vim_calls", "ls_busy_s", "cache_fill_peak_rss_mib", "cache_last_again_transfers",
           "rsync_s", "rsync_calls_per_file", "mount_ttfb_ms", "read_ratio", "write_ratio"]


def rows(before: dict, after: dict) -> list[list[str]]:
    out = [["run", "figure", "before", "after", "after / before"]]
    old_runs = {label(r): r["figures"] for r in before["runs"]}
    for run in after["runs"]:
        old = old_runs.get(label(run), {})
        for name in FIGURES:
            a, b = run["figures"].get(name), old.get(name)
            if a is None and b is None:
                continue
            factor = ""
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and b:
                factor = f"{a / b:.3f}"
            out.append([label(run), name, _fmt(b), _fmt(a), factor])
    return out


def markdown(table: list[list[str]], before: dict, after: dict) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(row)) + " |" for row in table[1:]]
    for name, doc in (("before", before), ("after", after)):
        m = doc["machine"]
        lines.append(f"\n{name}: product {str(m.get('product_commit'))[:9]} (modified: {m.get('guestfs_mount_modified')}), "
                     f"{m.get('date')}, load {m.get('loadavg_start')} -> {m.get('loadavg_end')}, {m.get('elapsed_s')} s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown here")
    args = parser.parse_args(argv)
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    table = rows(before, after)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table))
    if args.markdown:
        Path(args.markdown).write_text(markdown(table, before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
