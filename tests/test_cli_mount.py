"""The command line as an admin uses it: the demo (the README's first command), backgrounding after the mount is
up, and start-up errors that are one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers.mounting import is_mounted, unmount, wait_until
from tests.helpers.simulator import running_simulator


def _config(path, url, tmp_path, password="vmware"):
    path.write_text(
        f'[vcenter]\nurl = "{url}"\nusername = "administrator@vsphere.local"\npassword = "{password}"\n'
        '[vms.default]\nusername = "root"\npassword = "vmware"\n'
        f'[mount]\nspool_dir = "{tmp_path / "spool"}"\nrecovery_dir = "{tmp_path / "recovered"}"\n'
    )
    path.chmod(0o600)
    return path


def test_demo_runs_serves_files_and_stops_on_ctrl_c(tmp_path):
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "guestfs_mount", "demo", str(demo_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    mnt = demo_dir / "mnt"
    try:
        assert wait_until(lambda: is_mounted(mnt) or proc.poll() is not None, 60), "demo did not mount"
        assert is_mounted(mnt), proc.stdout.read() if proc.poll() is not None else "not mounted"
        assert sorted(os.listdir(mnt)) == ["db01", "legacy01", "web01", "win01"]
        assert "web01.lab.local" in (mnt / "web01/etc/hosts").read_text()
        assert os.listdir(mnt / "win01") == ["C:"]
        (mnt / "web01/hello.txt").write_text("hi\n")
        assert (demo_dir / "vms/web01/hello.txt").read_text() == "hi\n"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        unmount(mnt)
    assert proc.returncode == 0, out
    assert "Press Ctrl-C" in out and str(mnt) in out
    assert not is_mounted(mnt)
    leftovers = subprocess.run(["pgrep", "-f", f"guestfs_mount.sim --root {demo_dir}"], capture_output=True)
    assert leftovers.returncode == 1, "the demo left its simulator running"


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
