"""`guestfs-mount demo [DIR]`: a simulated vCenter with sample VMs, mounted, until Ctrl-C.

The simulator and the mount run as child processes in sessions of their own, so that Ctrl-C reaches only this
process, which then unmounts first and stops the simulator last. Without DIR everything lives in a temporary
directory that is removed at the end; with DIR the sample VMs and logs stay there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE_FILES = {
    "web01": {
        "etc/hostname": "web01\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n10.0.0.11\tweb01.lab.local web01\n10.0.0.12\tdb01.lab.local db01\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
        "etc/nginx/nginx.conf": "user www-data;\nworker_processes auto;\nhttp {\n    include sites-enabled/*;\n}\n",
        "var/log/syslog": "".join(f"Nov 23 10:{m:02d}:00 web01 systemd[1]: Started session {m}.\n" for m in range(60)),
        "var/log/nginx/access.log": "".join(f'10.0.0.5 - - [23/Nov/2026:10:00:{s:02d}] "GET / HTTP/1.1" 200 612\n'
                                            for s in range(60)),
        "home/alice/notes.txt": "remember: rsync -a ./site/ /mnt/vms/web01/srv/www/\n",
        "home/alice/.bashrc": "alias ll='ls -l'\n",
        "srv/www/index.html": "<!doctype html>\n<title>web01</title>\n<h1>It works</h1>\n",
        "etc/nginx/sites-available/default": "server {\n    listen 80 default_server;\n    root /srv/www;\n}\n",
        "run/systemd/resolve/stub-resolv.conf": "# web01's resolver (systemd-resolved stub)\nnameserver 127.0.0.53\n",
        "usr/share/zoneinfo/Etc/UTC": "TZif2 (a stand-in for the compiled zone file)\n",
    },
    "db01": {
        "etc/hostname": "db01\n",
        "etc/postgresql/15/main/postgresql.conf": "listen_addresses = '*'\nmax_connections = 100\n",
        "var/log/postgresql/postgresql-15-main.log": "LOG:  database system is ready to accept connections\n",
        "root/backup.sh": "#!/bin/sh\npg_dumpall > /var/backups/all.sql\n",
        "srv/README": "db01's /srv: try the demo's rsync hint into it\n",
    },
    "win01": {
        "C/Windows/win.ini": "; for 16-bit app support\r\n[fonts]\r\n[extensions]\r\n",
        "C/Users/Administrator/Desktop/readme.txt": "A Windows-style guest: drives are directories (C:).\r\n",
        "C/inetpub/wwwroot/iisstart.htm": "<html><body>IIS</body></html>\r\n",
    },
    "legacy01": {"etc/hostname": "legacy01\n"},
}
# the usual links of a Linux guest: absolute ones (the mount shows them inside the VM's directory) and a relative one
SYMLINKS = {
    "web01": {
        "etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf",
        "etc/localtime": "/usr/share/zoneinfo/Etc/UTC",
        "etc/nginx/sites-enabled/default": "../sites-available/default",
    },
}
BIG_FILE = ("web01", "opt/data/big.bin", 512 * 1024 * 1024)  # sparse: costs no disk, streams like any file
VM_STATES = {"win01": {"guestFamily": "windowsGuest"}, "legacy01": {"powerState": "poweredOff"}}


def make_sample_vms(vms_root: Path) -> None:
    for vm, files in SAMPLE_FILES.items():
        for rel, text in files.items():
            path = vms_root / vm / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    (vms_root / "web01/root").mkdir(mode=0o700, exist_ok=True)
    (vms_root / "db01/root/backup.sh").chmod(0o750)
    for vm, links in SYMLINKS.items():
        for rel, target in links.items():
            link = vms_root / vm / rel
            if link.parent.is_symlink():  # a DIR kept from an older demo had sites-enabled as a link
                link.parent.unlink()
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and os.readlink(link) != target:
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(target)
    vm, rel, size = BIG_FILE
    big = vms_root / vm / rel
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "ab") as f:
        f.truncate(size)
    (vms_root / ".vms.json").write_text(json.dumps(VM_STATES, indent=2))


def hints(mnt: Path, vms: Path) -> str:
    """The commands the demo suggests, one per line (a test runs each of them on a demo mount). A comment that
    starts with "fails:" names the error the command shows on purpose."""
    return f"""\
  ls -l {mnt}
  cat {mnt}/web01/etc/hosts
  ls -la {mnt}/web01/var/log
  ls -l {mnt}/web01/etc/resolv.conf {mnt}/web01/etc/localtime {mnt}/web01/etc/nginx/sites-enabled/
  cat {mnt}/web01/etc/resolv.conf                    # a link to /run/...: web01's file, not yours
  echo hello > {mnt}/web01/tmp.txt && cat {vms}/web01/tmp.txt
  vim {mnt}/web01/etc/hostname
  rsync -a /etc/ssl/certs/ {mnt}/db01/srv/certs/     # links too: the demo's login has exec = true
  ls -l {mnt}/db01/srv/certs | head
  dd if={mnt}/web01/opt/data/big.bin of=/dev/null bs=1M status=progress
  ls {mnt}/legacy01                                  # fails: Host is down (powered off)
  ls {mnt}/win01                                     # a Windows-style guest: C:"""


def write_config(path: Path, url: str, state: Path) -> None:
    path.write_text(
        "# written by guestfs-mount demo: the simulator's default logins\n"
        f'[vcenter]\nurl = "{url}"\nusername = "administrator@vsphere.local"\npassword = "vmware"\napi = "auto"\n\n'
        '[vms.default]\nusername = "root"\npassword = "vmware"\nexec = true    # symlinks and hard links (ln in the guest)\n\n'
        "[cache]\nattr_ttl = 5.0\ndir_ttl = 5.0\n\n"
        f'[mount]\nspool_dir = "{state / "spool"}"\nrecovery_dir = "{state / "recovered"}"\n'
    )
    path.chmod(0o600)


def _start(argv: list[str], log: Path, capture_stdout: bool = False) -> subprocess.Popen:
    # only the simulator's stdout is read (its first lines say where it listens); the rest goes to the log
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=subprocess.PIPE if capture_stdout else out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _read_listen_url(sim: subprocess.Popen, timeout: float = 20) -> str:
    """The simulator's first stdout line is `guestfs-sim: listening on URL`."""
    deadline = time.monotonic() + timeout
    os.set_blocking(sim.stdout.fileno(), False)
    buffered = b""
    while time.monotonic() < deadline and sim.poll() is None:
        buffered += sim.stdout.read() or b""
        for line in buffered.decode(errors="replace").splitlines():
            if line.startswith("guestfs-sim: listening on "):
                return line.rsplit(" ", 1)[1]
        time.sleep(0.05)
    raise RuntimeError("the simulator did not start")


def _is_mounted(mountpoint: Path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _unmount(mountpoint: Path) -> None:
    for argv in (["fusermount3", "-u", str(mountpoint)], ["fusermount3", "-u", "-z", str(mountpoint)]):
        if not _is_mounted(mountpoint):
            return
        subprocess.run(argv, capture_output=True, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestfs-mount demo",
                                     description="Run a simulated vCenter with sample VMs and mount it; Ctrl-C stops.")
    parser.add_argument("dir", nargs="?", help="keep the sample VMs, mount point and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="guestfs-demo-"))
    vms, mnt, state = base / "vms", base / "mnt", base / "state"
    for d in (vms, mnt, state):
        d.mkdir(parents=True, exist_ok=True)
    make_sample_vms(vms)

    sim = mount = None
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sim = _start([sys.executable, "-m", "guestfs_mount.sim", "--root", str(vms), "--listen", "127.0.0.1:0"],
                     base / "sim.log", capture_stdout=True)
        url = _read_listen_url(sim)
        write_config(base / "config.toml", url, state)
        mount = _start([sys.executable, "-m", "guestfs_mount", str(mnt), "--config", str(base / "config.toml"),
                        "--foreground"], base / "mount.log")
        deadline = time.monotonic() + 30
        while not _is_mounted(mnt) and mount.poll() is None and time.monotonic() < deadline and not stop:
            time.sleep(0.1)
        if not _is_mounted(mnt):
            print(f"guestfs-mount demo: the mount did not come up; see {base / 'mount.log'}", file=sys.stderr)
            return 1
        print(f"""guestfs-mount demo is running.
  simulated vCenter  {url}   (log: {base / 'sim.log'}; the VMs' files: {vms})
  mount              {mnt}   (log: {base / 'mount.log'})

Try, in another terminal:
{hints(mnt, vms)}

Press Ctrl-C to unmount and stop.""", flush=True)
        while not stop and mount.poll() is None and sim.poll() is None:
            time.sleep(0.2)
        if not stop:
            print("guestfs-mount demo: a process ended on its own; see the logs", file=sys.stderr)
            return 1
        return 0
    finally:
        print("\nguestfs-mount demo: unmounting and stopping", file=sys.stderr)
        _unmount(mnt)
        _stop(mount)
        _stop(sim)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
