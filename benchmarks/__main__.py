"""`python -m benchmarks [--suite throughput|latency] [--quick] [--json FILE] [--latency-ms 0,50]
[--api vi-json,soap,rest] [--guest parallel,serial] [--transport plain,tls | --tls] [--write-back off,on]
[--rsync-files N] [--only NAME ...]`"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks import latency, raw, report
from benchmarks.cases import CASES, Ctx, stock
from benchmarks.latency import stock as latency_stock
from benchmarks.data import FULL, LATENCY, LATENCY_QUICK, QUICK, Dataset, make_workdir
from benchmarks.rig import GUESTS, REPO, mount, simulator

ALL_CASES = {**CASES, **latency.LATENCY_CASES}
# the suites: their cases, latencies, dialects and simulated guests unless the options say otherwise
SUITES = {
    "throughput": {"cases": list(CASES), "latencies": "0,50", "quick_latencies": "0", "guests": "parallel"},
    "latency": {"cases": ["list", *latency.LATENCY_CASES], "latencies": "100", "quick_latencies": "20",
                "guests": "parallel,serial"},
}

HELP = """Measure guestfs-mount against raw transfers on the simulator, side by side in one run: for each latency
the simulator is started with --latency-ms, for each dialect the mount is started by its real command line, and
every case runs through the mount and raw. The latency suite (--suite latency) measures what ordinary commands
cost at real vCenter latency (100 ms per API call and transfer), in wall time and guest calls, on a simulated guest
that runs guest operations side by side and on one that runs them one at a time. Figures, targets and their
meaning: docs/performance.md."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=HELP)
    parser.add_argument("--suite", choices=list(SUITES), default="throughput",
                        help="throughput (default): transfers against raw HTTP, at latencies 0 and 50 ms; latency: "
                             "ls -l, cp -r of small files, re-reads, vim, the content cache's RSS, at 100 ms, both "
                             "dialects, parallel and serial guest (~40 min for today's main, a few for a mount with "
                             "the content cache and prefetch)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (64 MiB read/write, 2,000 entries, 200 rsync files, 256 MiB RSS copy, "
                             "8 x 8 MiB parallel) at latency 0 and the vi-json dialect only, unless --latency-ms "
                             "or --api say otherwise; well under a minute (the full run: ~20 min)")
    parser.add_argument("--json", metavar="FILE", help="write every figure by name, per latency and dialect, here")
    parser.add_argument("--markdown", metavar="FILE", help="write the table and the machine as Markdown here")
    parser.add_argument("--latency-ms", metavar="N,N", help="simulator latencies per API call (default 0,50)")
    parser.add_argument("--api", metavar="A,A", help="dialects, the first is the summary's (default vi-json,soap,rest)")
    parser.add_argument("--guest", metavar="G,G", help="simulated guests: parallel (any number of guest operations "
                        "at once) and/or serial (one at a time per VM, --serial-guest-ops); default per suite")
    parser.add_argument("--write-back", metavar="W,W", default="off",
                        help="mount with [mount] write_back off and/or on (default off; on needs a product that has "
                             "it): each a run of its own")
    parser.add_argument("--rsync-files", type=int, metavar="N", help="files rsync copies (rsync, rsync_in; default "
                        "1,000, --quick 200)")
    parser.add_argument("--transport", metavar="T,T", default="plain",
                        help="plain (http, the default) and/or tls (the simulator with --tls, its CA in the mount's "
                             "ca_file; the raw side on the same cipher): the real transfer path is HTTPS to ESXi")
    parser.add_argument("--tls", dest="transport", action="store_const", const="plain,tls",
                        help="short for --transport plain,tls: every run also over TLS, in columns beside the plain")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(ALL_CASES),
                        help=f"run only these cases ({', '.join(ALL_CASES)})")
    parser.add_argument("--workdir", metavar="DIR", help="parent of the temp dir for big files (default: the system "
                        "temp dir unless it is tmpfs, else /var/tmp)")
    parser.add_argument("--product", metavar="DIR", type=Path, default=REPO,
                        help="directory holding the guestfs_mount package to measure (default: this work tree); "
                             "e.g. an export of a commit: git archive COMMIT guestfs_mount | tar -x -C DIR")
    parser.add_argument("--commit", metavar="REV", help="measure guestfs_mount as of this commit (exported with git "
                        "archive into the temp dir) instead of the work tree")
    parser.add_argument("--guest-calls", type=int, metavar="N", help="[vcenter] max_guest_calls_per_vm of the mount "
                        "(default: the product's, 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) instead of deleting it")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to any one command (default 900)")
    args = parser.parse_args(argv)
    args.product = args.product.resolve()
    suite = SUITES[args.suite]
    args.latencies = [int(x) for x in (args.latency_ms or suite["quick_latencies" if args.quick else "latencies"])
                      .split(",")]
    quick_throughput = args.quick and args.suite == "throughput"
    args.apis = (args.api or ("vi-json" if quick_throughput else "vi-json,soap,rest")).split(",")
    for api in args.apis:
        if api not in ("vi-json", "soap", "rest"):
            parser.error(f"--api: unknown dialect {api!r}")
    args.guests = (args.guest or suite["guests"]).split(",")
    for guest in args.guests:
        if guest not in GUESTS:
            parser.error(f"--guest: unknown guest {guest!r} (parallel, serial)")
    args.transports = args.transport.split(",")
    for transport in args.transports:
        if transport not in ("plain", "tls"):
            parser.error(f"--transport: unknown transport {transport!r} (plain, tls)")
    args.cases = args.only or suite["cases"]
    args.write_backs = [w == "on" for w in args.write_back.split(",")]
    if not set(args.write_back.split(",")) <= {"on", "off"}:
        parser.error(f"--write-back: on and/or off, not {args.write_back!r}")
    return args


def sizes_for(args: argparse.Namespace):
    if args.suite == "latency":
        sizes = LATENCY_QUICK if args.quick else LATENCY
    else:
        sizes = QUICK if args.quick else FULL
    return dataclasses.replace(sizes, rsync_files=args.rsync_files) if args.rsync_files else sizes


def run_cases(args, sim, data: Dataset, sizes, workdir: Path, api: str, latency: int, guest_kind: str,
              transport: str = "plain", write_back: bool = False) -> dict:
    """One mount of the product on `sim`, every chosen case on it; the run's figures (and errors)."""
    name = (f"{api}-{latency}ms-{guest_kind}" + ("-tls" if transport == "tls" else "")
            + ("-write-back" if write_back else ""))
    run_dir = f"run-{name}"
    (sim.root / "vm1" / run_dir).mkdir(parents=True, exist_ok=True)
    stock(data, sizes, run_dir, args.cases)
    latency_stock(data, sizes, run_dir, args.cases)
    figures: dict = {}
    errors: dict = {}
    print(f"== {api}, latency {latency} ms, {guest_kind} guest, {transport}" + (", write_back" if write_back else ""),
          file=sys.stderr, flush=True)
    with mount(sim, workdir, name, api, args.product, guest_calls=args.guest_calls, write_back=write_back) as m, \
            contextlib.closing(raw.RawGuest(sim, api)) as guest:
        ctx = Ctx(sim, m, guest, data, sizes, workdir, run_dir, args.timeout, latency, args.product, write_back)
        for case in args.cases:
            t0 = time.monotonic()
            try:
                got = ALL_CASES[case](ctx)
            except Exception as e:  # one broken case must not lose the others' figures
                errors[case] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                print(f"   mount log tail:\n{m.log()[-1500:]}", file=sys.stderr)
                continue
            figures.update(got)
            print(f"   {case}: {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    run = {"latency_ms": latency, "api": api, "guest": guest_kind, "transport": transport, "figures": figures}
    if write_back:
        run["write_back"] = True
    if guest.tls_cipher:
        run["tls"] = f"{guest.tls_version} {guest.tls_cipher}"
    if errors:
        run["errors"] = errors
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = sizes_for(args)
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
        for latency_ms in args.latencies:
            for guest_kind in args.guests:
                for transport in args.transports:
                    sim_log = workdir / f"sim-{latency_ms}ms-{guest_kind}-{transport}.log"
                    with simulator(root, sim_log, latency_ms, guest_kind, tls=transport == "tls") as sim:
                        for api in args.apis:
                            for write_back in args.write_backs:
                                runs.append(run_cases(args, sim, data, sizes, workdir, api, latency_ms, guest_kind,
                                                      transport, write_back))
                                failed = failed or "errors" in runs[-1]
    finally:
        machine["loadavg_end"] = report._read("/proc/loadavg").split()[:3]
        machine["elapsed_s"] = round(time.monotonic() - started, 1)
        options = {"suite": args.suite, "quick": args.quick, "latencies_ms": args.latencies, "apis": args.apis,
                   "guests": args.guests, "transports": args.transports, "cases": args.cases, "sizes": asdict(sizes),
                   "max_guest_calls_per_vm": args.guest_calls, "write_back": args.write_back}
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
