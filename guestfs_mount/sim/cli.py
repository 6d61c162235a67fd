"""The `guestfs-sim` command line: parse, serve until SIGTERM/SIGINT, clean up."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .server import make_server
from .state import Settings, Simulator

log = logging.getLogger("guestfs_mount.sim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guestfs-sim",
        description="A simulated vCenter: every subdirectory of --root is one powered-on VM whose guest '/' it is.",
    )
    parser.add_argument("--root", required=True, metavar="DIR", help="one subdirectory per VM")
    parser.add_argument("--listen", default="127.0.0.1:8989", metavar="HOST:PORT", help="port 0 picks a free port")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a certificate made at start")
    parser.add_argument("--latency-ms", type=int, default=0, metavar="N", help="delay each API call by N ms")
    parser.add_argument("--transfer-latency-ms", type=int, default=None, metavar="N",
                        help="delay the first byte of each /guestFile GET and the answer to each PUT by N ms "
                             "(default: the --latency-ms value)")
    parser.add_argument("--serial-guest-ops", action="store_true",
                        help="one guest operation at a time per VM, as VMware Tools handles them; the others wait")
    parser.add_argument(
        "--transfer-host", default="*", metavar="NAME", help="host part of transfer URLs (default '*': the caller's host)"
    )
    parser.add_argument("--vc-user", default="administrator@vsphere.local")
    parser.add_argument("--vc-password", default="vmware")
    parser.add_argument("--guest-user", default="root")
    parser.add_argument("--guest-password", default="vmware")
    return parser


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host, port = _split_listen(args.listen)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    root = Path(args.root).resolve()
    if not root.is_dir():
        parser.error(f"--root {root} is not a directory")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s guestfs-sim %(message)s")

    settings = Settings(
        root=root,
        vc_user=args.vc_user,
        vc_password=args.vc_password,
        guest_user=args.guest_user,
        guest_password=args.guest_password,
        latency_ms=args.latency_ms,
        transfer_latency_ms=args.transfer_latency_ms,
        serial_guest_ops=args.serial_guest_ops,
        transfer_host=args.transfer_host,
        tls=args.tls,
    )
    tmpdir = None
    ctx = ca_path = None
    if args.tls:
        from .tls import make_tls  # trustme is only needed with --tls

        tmpdir = Path(tempfile.mkdtemp(prefix="guestfs-sim-tls-"))
        names = sorted({"localhost", "127.0.0.1", "::1", host} | ({args.transfer_host} - {"*"}))
        ctx, ca_path, settings.host_cert_pem, settings.host_thumbprint = make_tls(names, tmpdir)

    sim = Simulator(settings)
    try:
        server = make_server(host, port, sim, ctx)
    except OSError as err:
        print(f"guestfs-sim: cannot listen on {args.listen}: {err}", file=sys.stderr)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return 1
    scheme = "https" if args.tls else "http"
    shown = f"[{host}]" if ":" in host else host
    print(f"guestfs-sim: listening on {scheme}://{shown}:{sim.port}", flush=True)
    if ca_path:
        print(f"guestfs-sim: CA certificate at {ca_path}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping")
        server.shutdown()
        sim.transfers.abort_all()
        server.server_close()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
