"""The simulator models the field: latency on transfers (first byte of a GET, answer to a PUT) and a serial guest
(one guest operation at a time per VM, `--serial-guest-ops`), in both dialects."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from tests.helpers.simulator import RestCaller, ViCaller, running_simulator


def _list_at_once(callers: list, vms: list[str]) -> float:
    """One directory listing per (caller, VM) pair, all at once; the wall time."""
    def one(pair):
        caller, vm = pair
        if isinstance(caller, ViCaller):
            r = caller.guest("ListFilesInGuest", vm, filePath="/")
        else:
            r = caller.fs(vm, "/files", "list", path="/")
        assert r.status_code == 200, r.text

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(callers)) as pool:
        list(pool.map(one, zip(callers, vms)))
    return time.monotonic() - start


def test_serial_guest_runs_one_operation_at_a_time_per_vm(tmp_path):
    root = tmp_path / "vms"
    for name in ("alpha", "beta"):
        (root / name).mkdir(parents=True)
    with running_simulator(root, log_path=tmp_path / "sim.log", latency_ms=200,
                           extra_args=("--serial-guest-ops",)) as sim:
        callers = [ViCaller(sim), ViCaller(sim), RestCaller(sim), RestCaller(sim)]
        for c in callers:
            c.vm_id("alpha"), c.vm_id("beta")
        try:
            # four calls on one VM, both dialects: one after the other
            assert _list_at_once(callers, ["alpha"] * 4) >= 0.8
            # one call on each of two VMs: side by side
            assert _list_at_once(callers[:2], ["alpha", "beta"]) < 0.39
            # a planned fault ends its operation too: the next call is not held up
            sim.fault("ListFilesInGuest", "FileNotFound", vm="alpha")
            assert callers[0].guest("ListFilesInGuest", "alpha", filePath="/").status_code == 500
            assert _list_at_once(callers[:1], ["alpha"]) < 0.39
        finally:
            for c in callers:
                c.close()


def test_parallel_guest_by_default(tmp_path):
    (tmp_path / "vms" / "alpha").mkdir(parents=True)
    with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log", latency_ms=200) as sim:
        callers = [ViCaller(sim) for _ in range(4)]
        try:
            for c in callers:
                c.vm_id("alpha")
            assert _list_at_once(callers, ["alpha"] * 4) < 0.6
        finally:
            for c in callers:
                c.close()


def _get_first_byte(url: str) -> tuple[float, bytes]:
    start = time.monotonic()
    with httpx.stream("GET", url, timeout=10) as r:
        for chunk in r.iter_raw():
            return time.monotonic() - start, chunk
    return time.monotonic() - start, b""


def test_transfer_latency_delays_first_byte_of_get_and_answer_to_put(tmp_path):
    (tmp_path / "vms" / "alpha").mkdir(parents=True)
    (tmp_path / "vms" / "alpha" / "f").write_bytes(b"hello")
    with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log",
                           extra_args=("--transfer-latency-ms", "300")) as sim:
        vi = ViCaller(sim)
        try:
            start = time.monotonic()
            url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
            assert time.monotonic() - start < 0.25  # API calls: --latency-ms, 0 here
            seconds, first = _get_first_byte(url.replace("*", "127.0.0.1"))
            assert seconds >= 0.3 and first == b"hello"
            attrs = {"_typeName": "GuestPosixFileAttributes"}
            url = vi.guest("InitiateFileTransferToGuest", "alpha", guestFilePath="/g", fileAttributes=attrs,
                           fileSize=3, overwrite=True).json()
            start = time.monotonic()
            r = httpx.put(url.replace("*", "127.0.0.1"), content=b"abc", timeout=10)
            assert r.status_code == 200 and time.monotonic() - start >= 0.3
            assert (tmp_path / "vms" / "alpha" / "g").read_bytes() == b"abc"
        finally:
            vi.close()


def test_transfer_latency_defaults_to_the_api_latency(tmp_path):
    (tmp_path / "vms" / "alpha").mkdir(parents=True)
    (tmp_path / "vms" / "alpha" / "f").write_bytes(b"x")
    for extra, slow in (((), True), (("--transfer-latency-ms", "0"), False)):
        with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log", latency_ms=300,
                               extra_args=extra) as sim:
            vi = ViCaller(sim)
            try:
                url = vi.guest("InitiateFileTransferFromGuest", "alpha", guestFilePath="/f").json()["url"]
                seconds, _ = _get_first_byte(url.replace("*", "127.0.0.1"))
                assert (seconds >= 0.3) == slow, (extra, seconds)
            finally:
                vi.close()
