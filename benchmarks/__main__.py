"""`python -m benchmarks [--quick] [--json FILE] [--latency-ms 0,50] [--api vi-json,soap,rest] [--only NAME ...]`"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks import raw, report
from benchmarks.cases import CASES, Ctx, stock
from benchmarks.data import FULL, QUICK, Dataset, make_workdir
from benchmarks.rig import REPO, mount, simulator

HELP = """Measure guestfs-mount against raw transfers on the simulator, side by side in one run: for each latency
the simulator is started with --latency-ms, for each dialect the mount is started by its real command line, and
every case runs through the mount and raw. Figures, targets and their meaning: docs/performance.md."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=HELP)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (64 MiB read/write, 2,000 entries, 200 rsync files, 256 MiB RSS copy, "
                             "8 x 8 MiB parallel) at latency 0 and the vi-json dialect only, unless --latency-ms "
                             "or --api say otherwise; well under a minute (the full run: ~20 min)")
    parser.add_argument("--json", metavar="FILE", help="write every figure by name, per latency and dialect, here")
    parser.add_argument("--markdown", metavar="FILE", help="write the table and the machine as Markdown here")
    parser.add_argument("--latency-ms", metavar="N,N", help="simulator latencies per API call (default 0,50)")
    parser.add_argument("--api", metavar="A,A", help="dialects, the first is the summary's (default vi-json,soap,rest)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(CASES),
                        help=f"run only these cases ({', '.join(CASES)})")
    parser.add_argument("--workdir", metavar="DIR", help="parent of the temp dir for big files (default: the system "
                        "temp dir unless it is tmpfs, else /var/tmp)")
    parser.add_argument("--product", metavar="DIR", type=Path, default=REPO,
                        help="directory holding the guestfs_mount package to measure (default: this work tree); "
                             "e.g. an export of a commit: git archive COMMIT guestfs_mount | tar -x -C DIR")
    parser.add_argument("--commit", metavar="REV", help="measure guestfs_mount as of this commit (exported with git "
                        "archive into the temp dir) instead of the work tree")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) instead of deleting it")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to any one command (default 900)")
    args = parser.parse_args(argv)
    args.product = args.product.resolve()
    args.latencies = [int(x) for x in (args.latency_ms or ("0" if args.quick else "0,50")).split(",")]
    args.apis = (args.api or ("vi-json" if args.quick else "vi-json,soap,rest")).split(",")
    for api in args.apis:
        if api not in ("vi-json", "soap", "rest"):
            parser.error(f"--api: unknown dialect {api!r}")
    args.cases = args.only or list(CASES)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    workdir = make_workdir(args.workdir)
    need = 3 * max(sizes.read, sizes.rss) + 4 * sizes.parallel * sizes.parallel_files
    if shutil.disk_usage(workdir).free < need:
        print(f"warning: {workdir} has less than {need >> 20} MiB free", file=sys.stderr)
    if args.commit:
        args.product = workdir / "product"
        args.product.mkdir()
        try:
            report.export_commit(args.commit, args.product)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    machine = report.machine_facts(workdir, args.product, args.commit)
    runs: list[dict] = []
    failed = False
    started = time.monotonic()
    try:
        root = workdir / "vms"
        root.mkdir()
        data = Dataset(workdir, root)
        for latency in args.latencies:
            with simulator(root, workdir / f"sim-{latency}ms.log", latency, args.product) as sim:
                for api in args.apis:
                    run_dir = f"run-{api}-{latency}ms"
                    (root / "vm1" / run_dir).mkdir(parents=True, exist_ok=True)
                    stock(data, sizes, run_dir, args.cases)
                    figures: dict = {}
                    errors: dict = {}
                    print(f"== {api}, latency {latency} ms", file=sys.stderr, flush=True)
                    with mount(sim, workdir, api, args.product) as m, contextlib.closing(raw.RawGuest(sim, api)) as guest:
                        ctx = Ctx(sim, m, guest, data, sizes, workdir, run_dir, args.timeout)
                        for name in args.cases:
                            t0 = time.monotonic()
                            try:
                                got = CASES[name](ctx)
                            except Exception as e:  # one broken case must not lose the others' figures
                                failed = True
                                errors[name] = f"{type(e).__name__}: {e}"
                                traceback.print_exc()
                                print(f"   mount log tail:\n{m.log_tail(1500)}", file=sys.stderr)
                                continue
                            figures.update(got)
                            print(f"   {name}: {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
                    run = {"latency_ms": latency, "api": api, "figures": figures}
                    if errors:
                        run["errors"] = errors
                    runs.append(run)
    finally:
        machine["loadavg_end"] = report._read("/proc/loadavg").split()[:3]
        machine["elapsed_s"] = round(time.monotonic() - started, 1)
        options = {"quick": args.quick, "latencies_ms": args.latencies, "apis": args.apis, "cases": args.cases,
                   "sizes": asdict(sizes)}
        try:
            doc = report.document(runs, machine, options)
            print(report.table(doc))
            print(f"({machine['elapsed_s']} s; workdir {workdir} on {machine['workdir_filesystem']})")
            if args.json:
                report.write_json(doc, args.json)
            if args.markdown:
                Path(args.markdown).write_text(report.markdown(doc))
        finally:
            if args.keep:
                print(f"kept {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
