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

from .hosts import parse_hosts
from .server import make_server
from .state import Settings, Simulator, version_tuple

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
    parser.add_argument(
        "--esxi",
        action="store_true",
        help="be a standalone ESXi host: SOAP (/sdk) only, datacenter ha-datacenter, host ha-host, '*' in transfer URLs",
    )
    parser.add_argument("--no-transfer-port", action="store_true",
                        help="'*' transfer URLs carry no port, as ESXi's do (a client must use the API's port)")
    parser.add_argument("--hosts", metavar="NAME=ADDR,...",
                        help="simulated ESXi hosts: inventory name and management address (a loopback IP where the "
                             "host listens on our port, with its own self-signed certificate under --tls); "
                             "transfer URLs then name each VM's host")
    parser.add_argument("--host-cert-expired", action="store_true",
                        help="the --hosts certificates expired a year ago (a lab host nobody renewed)")
    parser.add_argument("--transfer-gzip", nargs="?", const="accepted", choices=("accepted", "always"),
                        help="gzip /guestFile GET bodies (chunked, no Content-Length) when the client accepts gzip, "
                             "or always")
    parser.add_argument("--vc-version", default="8.0.3", metavar="X.Y.Z",
                        help="the vCenter version reported; below 8.0.1 there is no VI/JSON, below 7.0.2 no REST "
                             "guest operations, below 8.0.2 no hello (default 8.0.3)")
    parser.add_argument("--rest-vm-limit", type=int, default=4000, metavar="N",
                        help="GET /api/vcenter/vm refuses more than N matches (500 UNABLE_TO_ALLOCATE_RESOURCE)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="listings leave out regular files nobody may read (chmod 000) but count them, as the "
                             "guest agent does with a file whose size it cannot read")
    parser.add_argument("--rest-permissions", default="644", choices=("644", "0644", "100644"),
                        help="how REST prints a file's permissions (default 644)")
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
    if args.esxi and args.transfer_host != "*":
        parser.error("--esxi serves transfers itself: its transfer URLs name the host as '*' (drop --transfer-host)")
    root = Path(args.root).resolve()
    if not root.is_dir():
        parser.error(f"--root {root} is not a directory")
    try:
        hosts = parse_hosts(args.hosts) if args.hosts else None
        version_tuple(args.vc_version)
    except ValueError as err:
        parser.error(str(err) if args.hosts else f"--vc-version wants X.Y.Z, got {args.vc_version!r}")
    if hosts and args.esxi:
        parser.error("--esxi is one host (ha-host): --hosts simulates the hosts behind a vCenter")
    if hosts and args.transfer_host != "*":
        parser.error("--hosts names the hosts in transfer URLs; leave out --transfer-host")
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
        esxi=args.esxi,
        hosts=hosts,
        host_cert_expired=args.host_cert_expired,
        transfer_port=not args.no_transfer_port,
        transfer_gzip=args.transfer_gzip,
        vc_version=args.vc_version,
        rest_vm_limit=args.rest_vm_limit,
        skip_unreadable=args.skip_unreadable,
        rest_permissions=args.rest_permissions,
    )
    sim = Simulator(settings)
    if not hosts:  # the one default host is the vCenter's own address
        sim.hosts.first.address = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    tmpdir = None
    ctx = ca_path = None
    host_contexts: dict[str, object] = {}
    if args.tls:
        from .tls import host_certificate, make_tls, sha1_thumbprint  # trustme is only needed with --tls

        tmpdir = Path(tempfile.mkdtemp(prefix="guestfs-sim-tls-"))
        names = sorted({"localhost", "127.0.0.1", "::1", host} | ({args.transfer_host} - {"*"}))
        ctx, ca_path, settings.host_cert_pem, settings.host_thumbprint, settings.certs_zip = make_tls(names, tmpdir)
        for h in sim.hosts.all:
            if hosts:
                host_contexts[h.id], h.cert_pem = host_certificate(h.name, h.address, tmpdir, args.host_cert_expired)
                h.thumbprint = sha1_thumbprint(h.cert_pem)
            else:
                h.cert_pem, h.thumbprint = settings.host_cert_pem, settings.host_thumbprint
        settings.host_cert_pem, settings.host_thumbprint = sim.hosts.first.cert_pem, sim.hosts.first.thumbprint
        by_name = {h.name: host_contexts[h.id] for h in sim.hosts.all if h.id in host_contexts}

        def by_sni(sock, server_name, _ctx):
            # vCenter's own address answers a host's name (SNI) with that host's certificate, as an SNI-routing
            # proxy in front of the hosts would (transfer_host = "vcenter")
            if server_name in by_name:
                sock.context = by_name[server_name]

        ctx.sni_callback = by_sni

    servers = []
    try:
        servers.append(make_server(host, port, sim, ctx))
        for h in sim.hosts.all if hosts else []:
            if h.address != host:
                servers.append(make_server(h.address, sim.port, sim, host_contexts.get(h.id), esxi_host=h.id))
    except OSError as err:
        print(f"guestfs-sim: cannot listen on {args.listen} (or a host's address): {err}", file=sys.stderr)
        for server in servers:
            server.server_close()
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
    for server in servers:
        threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping")
        for server in servers:
            server.shutdown()
        sim.transfers.abort_all()
        for server in servers:
            server.server_close()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
