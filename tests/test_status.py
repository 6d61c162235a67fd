"""`guestfs-mount status MOUNTPOINT`: a real mount on the real simulator, a transfer slowed by the simulator's
throttle, and the status command run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from tests.helpers.commands import guestfs_mount
from tests.helpers.mounting import wait_until
from tests.helpers.mountfs import VM, mounted_guestfs

BIG = 4 << 20


def status(mp, *args) -> subprocess.CompletedProcess:
    return guestfs_mount("status", mp, *args, timeout=30)


def status_json(mp) -> dict:
    result = status(mp, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_transfer(mp, direction: str, timeout: float = 20) -> dict:
    found: list[dict] = []

    def moving() -> bool:
        found[:] = [t for t in status_json(mp)["transfers"] if t["direction"] == direction and t["done"] > 0]
        return bool(found)

    assert wait_until(moving, timeout, interval=0.2), f"no {direction} in flight within {timeout}s"
    return found[0]


def assert_no_secrets(text: str, m) -> None:
    for secret in (m.sim.vc_password, m.sim.guest_password, "token="):
        assert secret not in text


@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_status_shows_a_download_while_it_runs_and_not_after(tmp_path, state_home, api):
    def setup(vm1):
        (vm1 / "big").write_bytes(os.urandom(BIG))

    with mounted_guestfs(tmp_path, api, setup=setup) as m:
        m.sim.throttle(VM, 256 << 10)  # 4 MiB at 256 KiB/s: 16 s, if nobody lifts it
        reader = subprocess.Popen(["cat", str(m.vm / "big")], stdout=subprocess.DEVNULL)
        try:
            t = wait_for_transfer(m.mp, "download")
            assert (t["vm"], t["path"], t["direction"]) == (VM, "/big", "download")
            assert 0 < t["done"] < t["total"] == BIG
            assert t["rate_bps"] > 0

            table = status(m.mp)
            assert table.returncode == 0, table.stderr
            assert VM in table.stdout and "/big" in table.stdout and "download" in table.stdout
            assert "MiB/s" in table.stdout
            assert_no_secrets(table.stdout + table.stderr, m)
        finally:
            m.sim.throttle(VM, 0)
            reader.wait(timeout=30)
        assert reader.returncode == 0

        assert wait_until(lambda: status_json(m.mp)["transfers"] == [], 10, interval=0.2)
        doc = status_json(m.mp)
        assert_no_secrets(json.dumps(doc), m)
        assert doc["dialect"] == api and doc["pid"] == m.proc.pid
        figures = doc["figures"]
        for key in ("attrs_cached", "negative_cached", "listings_cached", "cache_hits", "cache_misses", "inodes",
                    "open_files", "dirty_files", "spool_bytes", "vms_listed", "live_transfers"):
            assert isinstance(figures[key], int) and figures[key] >= 0, key
        assert figures["vms_listed"] == 1 and figures["live_transfers"] == 0
        assert "no transfers in flight" in status(m.mp).stdout
        socket_path = next((state_home / "guestfs-mount" / "run").glob("*.sock"))
        assert oct(socket_path.stat().st_mode & 0o777) == oct(0o600)
        assert oct(socket_path.parent.stat().st_mode & 0o777) == oct(0o700)
    # the socket goes with the mount
    assert list((state_home / "guestfs-mount" / "run").glob("*.sock")) == []


def test_status_shows_an_upload(tmp_path, state_home):
    data = os.urandom(BIG)
    with mounted_guestfs(tmp_path) as m:
        m.sim.throttle(VM, 256 << 10)
        errors: list[BaseException] = []

        def write():
            try:
                (m.vm / "up").write_bytes(data)  # the upload runs at close
            except BaseException as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            t = wait_for_transfer(m.mp, "upload")
            assert (t["vm"], t["path"], t["total"]) == (VM, "/up", BIG) and 0 < t["done"] <= BIG
        finally:
            m.sim.throttle(VM, 0)
            writer.join(timeout=30)
        assert not writer.is_alive() and not errors
        assert (m.guest / "up").read_bytes() == data
        assert wait_until(lambda: status_json(m.mp)["transfers"] == [], 10, interval=0.2)


def test_status_of_a_directory_without_a_mount(tmp_path, state_home):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = status(plain)
    assert result.returncode == 1
    assert result.stderr.strip() == f"guestfs-mount: no guestfs-mount running at {plain.resolve()}"
    assert result.stdout == ""


def test_a_stale_socket_is_replaced(tmp_path, state_home):
    import socket

    from guestfs_mount.cli.control import control_socket

    mp = tmp_path / "mnt"
    mp.mkdir()
    stale = control_socket(str(mp.resolve()))
    stale.parent.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening: what a crashed mount leaves
    assert status(mp).returncode == 1
    with mounted_guestfs(tmp_path) as m:
        assert wait_until(lambda: status(m.mp).returncode == 0, 10, interval=0.2)


def test_status_also_looks_where_the_systemd_service_keeps_its_socket(monkeypatch, tmp_path):
    from guestfs_mount.cli import control

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    paths = control.control_sockets("/mnt/vms")
    assert paths[0] == tmp_path / "state/guestfs-mount/run" / f"{control.mount_id('/mnt/vms')}.sock"
    assert paths[1] == control.SERVICE_STATE_DIR / "run" / paths[0].name
