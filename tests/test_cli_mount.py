"""The command line as an admin uses it: the demo (the README's first command), backgrounding after the mount is
up, and start-up errors that are one clear line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.mounting import is_mounted, stop_process, unmount, wait_until
from tests.helpers.simulator import running_simulator


def _config(path, url, tmp_path, password="vmware"):
    path.write_text(
        f'[vcenter]\nurl = "{url}"\nusername = "administrator@vsphere.local"\npassword = "{password}"\n'
        '[vms.default]\nusername = "root"\npassword = "vmware"\n'
        f'[mount]\nspool_dir = "{tmp_path / "spool"}"\nrecovery_dir = "{tmp_path / "recovered"}"\n'
    )
    path.chmod(0o600)
    return path


def _run_hint(line: str) -> None:
    """One command the demo printed, run as a user would paste it; a comment "fails: X" means it shows X."""
    command, _, comment = line.partition("  # ")
    stdin = ":wq\n" if command.strip().startswith("vim ") else ""  # vim reads its commands from a pipe too
    p = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, input=stdin)
    expected = comment.strip()[len("fails: "):].split(" (")[0] if comment.strip().startswith("fails:") else None
    if expected:
        assert p.returncode != 0 and expected in p.stderr, (line, p.returncode, p.stderr)
    else:
        assert p.returncode == 0, (line, p.returncode, p.stderr[-2000:])


def test_demo_runs_every_hint_it_prints_and_stops_on_ctrl_c(tmp_path):
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "guestfs_mount", "demo", str(demo_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    mnt = demo_dir / "mnt"
    lines: queue.Queue = queue.Queue()

    def read_output() -> None:
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read_output, daemon=True).start()
    printed: list[str] = []
    try:
        while not any("Press Ctrl-C" in line for line in printed):
            try:
                printed.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"the demo printed no hints: {printed}") from None
        assert is_mounted(mnt)
        assert sorted(os.listdir(mnt)) == ["db01", "legacy01", "web01", "win01"]
        assert "web01.lab.local" in (mnt / "web01/etc/hosts").read_text()
        assert os.listdir(mnt / "win01") == ["C:"]
        hints = [line for line in printed[printed.index("Try, in another terminal:\n") + 1:] if line.strip()][:-1]
        assert len(hints) >= 10, printed
        for line in hints:
            _run_hint(line)
        assert (mnt / "web01/etc/resolv.conf").read_text().startswith("# web01's resolver")
        assert (demo_dir / "vms/web01/tmp.txt").read_text() == "hello\n"
        certs = demo_dir / "vms/db01/srv/certs"
        links = [p for p in Path("/etc/ssl/certs").iterdir() if p.is_symlink()]
        assert links and all(os.readlink(certs / p.name) == os.readlink(p) for p in links)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        stop_process(proc, timeout=30)  # a failed assertion above: SIGTERM, so that the demo stops what it started
        unmount(mnt)
        pattern = f"guestfs_mount.sim --root {demo_dir}"
        left_running = subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0
        if left_running:  # never leave it behind, whatever the test says about it below
            subprocess.run(["pkill", "-f", pattern], capture_output=True)
    out = "".join(printed)
    assert proc.returncode == 0, out
    assert str(mnt) in out
    assert not is_mounted(mnt)
    assert not left_running, "the demo left its simulator running"


def test_mount_goes_to_the_background_once_it_is_up(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha/motd").write_text("welcome\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim:
        config = _config(tmp_path / "config.toml", sim.url, tmp_path)
        try:
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "guestfs_mount", str(mnt), "--config", str(config)],
                                  capture_output=True, text=True, timeout=60, env=env)
            assert done.returncode == 0, done.stderr
            assert is_mounted(mnt), "the command returned before the mount was up"
            assert (mnt / "alpha/motd").read_text() == "welcome\n"
            assert time.monotonic() - started < 30
        finally:
            unmount(mnt)
        # the background process ends once unmounted, and it logged to the state directory
        assert wait_until(lambda: "unmounted" in _read(tmp_path / "state/guestfs-mount/guestfs-mount.log"), 20)


def test_a_mount_that_cannot_log_in_exits_1_with_one_clear_line(tmp_path):
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim:
        config = _config(tmp_path / "config.toml", sim.url, tmp_path, password="not-the-password")
        done = subprocess.run([sys.executable, "-m", "guestfs_mount", str(mnt), "--config", str(config), "-f"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "vCenter refused the login" in done.stderr
    assert "not-the-password" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not is_mounted(mnt)


def _read(path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_mount_helper_mounts_as_mount8_calls_it(tmp_path):
    """`mount -t fuse.guestfs vcenter MP -o ...` runs `mount.fuse.guestfs vcenter MP -o ...`: the same call here,
    with the fstab-only options an fstab line carries."""
    helper = os.path.join(os.path.dirname(sys.executable), "mount.fuse.guestfs")
    root = tmp_path / "vms"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha/issue").write_text("Debian\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    with running_simulator(root, log_path=tmp_path / "sim.log") as sim:
        config = _config(tmp_path / "config.toml", sim.url, tmp_path)
        try:
            done = subprocess.run([helper, "vcenter", str(mnt), "-o",
                                   f"rw,config={config},_netdev,x-systemd.automount,nofail"],
                                  capture_output=True, text=True, timeout=60, env=env)
            assert done.returncode == 0, done.stderr
            assert (mnt / "alpha/issue").read_text() == "Debian\n"
        finally:
            unmount(mnt)
