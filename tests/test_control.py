"""The control socket on its own: one JSON request, one answer, each connection in its own task."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest
import trio

from guestfs_mount.cli import control
from guestfs_mount.fs.control import serve_control


@pytest.fixture
def sock_path():
    # a unix socket path has ~107 bytes: pytest's tmp_path can be longer
    directory = Path(tempfile.mkdtemp(prefix="gfs-ctl-", dir="/tmp"))
    yield directory / "run" / "m.sock"
    for p in sorted(directory.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    directory.rmdir()


def exchange(path: Path, request: dict, timeout: float = 5) -> dict:
    return control._exchange(path, request, timeout)


async def test_requests_are_answered_by_op_and_a_slow_one_holds_up_no_other(sock_path):
    release = trio.Event()

    async def status(request):
        return {"ok": True, "echo": request.get("x")}

    async def slow(request):
        await release.wait()
        return {"slow": "done"}

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, sock_path, {"status": status, "slow": slow})
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
        slow_answer = []

        async def ask_slow():
            slow_answer.append(await trio.to_thread.run_sync(exchange, sock_path, {"op": "slow"}))

        nursery.start_soon(ask_slow)
        await trio.sleep(0.2)
        with trio.fail_after(5):  # answered while "slow" still waits
            assert await trio.to_thread.run_sync(exchange, sock_path, {"op": "status", "x": 3}) == {"ok": True,
                                                                                                   "echo": 3}
            unknown = await trio.to_thread.run_sync(exchange, sock_path, {"op": "nope"})
        assert "unknown request 'nope'" in unknown["error"] and "slow, status" in unknown["error"]
        assert slow_answer == []
        release.set()
        with trio.fail_after(5):
            while not slow_answer:
                await trio.sleep(0.05)
        assert slow_answer == [{"slow": "done"}]
        nursery.cancel_scope.cancel()
    assert not sock_path.exists()  # removed when the task ends


async def test_garbage_and_silence_are_dropped_and_the_socket_keeps_serving(sock_path, monkeypatch):
    import guestfs_mount.fs.control as server

    monkeypatch.setattr(server, "IO_TIMEOUT", 0.5)

    async def status(request):
        return {"ok": True}

    async def broken(request):
        raise RuntimeError("bug")

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, sock_path, {"status": status, "broken": broken})

        def garbage_then_silence():
            for payload in (b"not json\n", b"[1, 2]\n", None):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(str(sock_path))
                    if payload is not None:
                        s.sendall(payload)
                    assert s.recv(100) == b""  # closed without an answer
            return exchange(sock_path, {"op": "broken"}), exchange(sock_path, {"op": "status"})

        with trio.fail_after(10):
            broken_answer, ok = await trio.to_thread.run_sync(garbage_then_silence)
        assert broken_answer == {"error": "the mount could not answer 'broken'; see its log"}
        assert ok == {"ok": True}
        nursery.cancel_scope.cancel()


def test_ask_says_when_nothing_runs_there(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(control, "SERVICE_STATE_DIR", tmp_path / "service")
    with pytest.raises(control.NotRunning, match="no guestfs-mount running at"):
        control.ask(str(tmp_path), {"op": "status"}, 1)
