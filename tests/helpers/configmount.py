"""Mount with a config the test shapes: another vCenter URL (a proxy in front of the simulator), TLS keys, other
password sources. Same command line and same teardown as `mountfs.mounted_guestfs`; the simulator is the
caller's."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

from tests.helpers.mounting import mounted, stop_process, unmount
from tests.helpers.mountfs import GuestMount
from tests.helpers.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]


def config_text(tmp: Path, url: str, api: str = "vi-json", vcenter_extra: str = "", vms: str | None = None,
                mount_extra: str = "") -> str:
    """A config for the simulator's default logins, with lines added to [vcenter] and [mount]; `vms` replaces
    the [vms.default] table."""
    if vms is None:
        vms = '[vms.default]\nusername = "root"\npassword = "vmware"\n'
    return (textwrap.dedent(f"""\
        [vcenter]
        url = "{url}"
        username = "administrator@vsphere.local"
        api = "{api}"
        """) + vcenter_extra + "\n" + vms + textwrap.dedent(f"""\
        [cache]
        attr_ttl = 5.0
        dir_ttl = 5.0
        vm_list_ttl = 2.0
        [mount]
        spool_dir = "{tmp / 'spool'}"
        recovery_dir = "{tmp / 'recovered'}"
        """) + mount_extra)


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def mount_argv(mp: Path, config: Path, extra_args=()) -> list[str]:
    return [sys.executable, "-m", "guestfs_mount", str(mp), "--config", str(config), "--foreground", *extra_args]


def child_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


@contextlib.contextmanager
def mounted_with(tmp: Path, sim: Simulator, config_body: str, api: str = "vi-json", extra_args=(),
                 env: dict[str, str] | None = None, mp: Path | None = None) -> Iterator[GuestMount]:
    """Mount at `mp` (default tmp/mnt) with `config_body` (written 0600) until the block ends."""
    mp = mp or tmp / "mnt"
    config = write_private(tmp / "config.toml", config_body)
    log_path = tmp / "mount.log"
    with mounted(mount_argv(mp, config, extra_args), mp, log_path=log_path, env=env or child_env()) as proc:
        yield GuestMount(mp, sim.root, api, log_path, sim, proc)


def failed_start(tmp: Path, config_body: str, timeout: float = 60, env: dict[str, str] | None = None,
                 mode: int = 0o600) -> subprocess.CompletedProcess:
    """Run a mount in the foreground that is expected not to come up; returns its exit code and output. Should it
    mount after all, it is unmounted and stopped here, and the test sees a timeout or exit code 0."""
    mp = tmp / "mnt"
    mp.mkdir(exist_ok=True)
    config = tmp / "config.toml"
    config.write_text(config_body)
    os.chmod(config, mode)
    argv = mount_argv(mp, config)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or child_env(), stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        unmount(mp)
        stop_process(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
