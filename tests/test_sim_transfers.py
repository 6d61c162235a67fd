"""The /guestFile endpoint: large files in flat memory, cut transfers (planned faults, power off), concurrency."""

import os
import threading
import time

import httpx
import pytest

from tests.helpers.simulator import ViCaller

MiB = 1 << 20


@pytest.fixture
def vi(sim):
    caller = ViCaller(sim)
    caller.vm_id("alpha")
    yield caller
    caller.close()


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def download_url(sim, vi, path, vm="alpha"):
    r = vi.guest("InitiateFileTransferFromGuest", vm, guestFilePath=path)
    assert r.status_code == 200, r.text
    return r.json()["url"].replace("*", "127.0.0.1", 1)


def upload_url(sim, vi, path, size, vm="alpha"):
    r = vi.guest(
        "InitiateFileTransferToGuest", vm, guestFilePath=path, fileAttributes={"_typeName": "GuestFileAttributes"}, fileSize=size, overwrite=True
    )
    assert r.status_code == 200, r.text
    return r.json().replace("*", "127.0.0.1", 1)


def zeros(total: int, chunk: int = MiB):
    block = bytes(chunk)
    left = total
    while left:
        n = min(chunk, left)
        yield block[:n]
        left -= n


def round_trip_in_flat_memory(sim, vi, size, verify=True):
    src = sim.vm_dir("alpha") / "big"
    with open(src, "wb") as f:
        f.truncate(size)  # sparse: the test spends its time on the wire, not on the disk
    got = 0
    with httpx.stream("GET", download_url(sim, vi, "/big"), timeout=60, verify=verify) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == size
        for chunk in r.iter_raw(MiB):
            got += len(chunk)
    assert got == size
    r = httpx.put(upload_url(sim, vi, "/big.copy", size), content=zeros(size), headers={"Content-Length": str(size)}, timeout=120, verify=verify)
    assert r.status_code == 200
    assert (sim.vm_dir("alpha") / "big.copy").stat().st_size == size
    assert peak_rss(sim.process.pid) < 100 * MiB


def test_1_gib_round_trip_keeps_memory_flat(sim, vi):
    round_trip_in_flat_memory(sim, vi, 1024 * MiB)


def test_planned_fault_cuts_a_download_midway_and_url_stays_usable(sim, vi):
    (sim.vm_dir("alpha") / "f").write_bytes(os.urandom(4 * MiB))
    url = download_url(sim, vi, "/f")
    sim.fault("guestFile.GET", "SystemError")
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("GET", url, timeout=10) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                pass
    # a failed request does not spend the URL
    assert httpx.get(url, timeout=10).content == (sim.vm_dir("alpha") / "f").read_bytes()


def test_planned_fault_on_upload_writes_nothing(sim, vi):
    target = sim.vm_dir("alpha") / "up"
    target.write_bytes(b"old")
    size = 4 * MiB
    url = upload_url(sim, vi, "/up", size)
    sim.fault("guestFile.PUT", "SystemError")
    try:
        r = httpx.put(url, content=zeros(size, 64 * 1024), headers={"Content-Length": str(size)}, timeout=10)
        assert r.status_code >= 500
    except httpx.HTTPError:
        pass  # the server may close before the client finished sending
    assert target.read_bytes() == b"old"
    assert [n for n in os.listdir(target.parent) if n.startswith(".guestfs-sim")] == []


def test_power_off_aborts_a_download_in_flight(sim, vi):
    with open(sim.vm_dir("alpha") / "big", "wb") as f:
        f.truncate(512 * MiB)
    url = download_url(sim, vi, "/big")
    got = 0
    start = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("GET", url, timeout=10) as r:
            for chunk in r.iter_raw(MiB):
                got += len(chunk)
                if got >= 2 * MiB and got - len(chunk) < 2 * MiB:
                    sim.power("alpha", "poweredOff")
    assert got < 512 * MiB
    assert time.monotonic() - start < 10
    sim.power("alpha", "poweredOn")
    assert httpx.get(url, timeout=10).status_code == 404


def test_power_off_aborts_an_upload_in_flight(sim, vi):
    size = 256 * MiB
    url = upload_url(sim, vi, "/up", size)
    sent = 0

    def body():
        nonlocal sent
        for chunk in zeros(size):
            sent += len(chunk)
            if sent == 4 * MiB:
                sim.power("alpha", "poweredOff")
            yield chunk

    try:
        r = httpx.put(url, content=body(), headers={"Content-Length": str(size)}, timeout=10)
        assert r.status_code >= 400
    except httpx.HTTPError:
        pass
    assert sent < size
    root = sim.vm_dir("alpha")
    assert not (root / "up").exists()
    deadline = time.monotonic() + 10
    while [n for n in os.listdir(root) if n.startswith(".guestfs-sim")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [n for n in os.listdir(root) if n.startswith(".guestfs-sim")] == []


def test_many_transfers_at_once(sim, vi):
    root = sim.vm_dir("alpha")
    blobs = {f"/f{i}": os.urandom(MiB + i) for i in range(8)}
    for path, data in blobs.items():
        (root / path.lstrip("/")).write_bytes(data)
    urls = {path: download_url(sim, vi, path) for path in blobs}
    results = {}

    def fetch(path):
        results[path] = httpx.get(urls[path], timeout=30).content

    threads = [threading.Thread(target=fetch, args=(p,)) for p in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == blobs


def test_unknown_token_and_wrong_method(sim, vi):
    (sim.vm_dir("alpha") / "f").write_text("x")
    url = download_url(sim, vi, "/f")
    assert httpx.get(url.replace("token=", "token=00"), timeout=10).status_code == 404
    assert httpx.get(f"{sim.url}/guestFile?id=999&token=abc", timeout=10).status_code == 404
    assert httpx.put(url, content=b"x", timeout=10).status_code == 404  # a download URL takes no PUT
    assert httpx.get(url, timeout=10).content == b"x"


def test_second_request_while_one_is_in_flight_is_409(sim, vi):
    with open(sim.vm_dir("alpha") / "big", "wb") as f:
        f.truncate(256 * MiB)
    url = download_url(sim, vi, "/big")
    with httpx.stream("GET", url, timeout=10) as first:
        assert first.status_code == 200
        chunks = first.iter_raw(MiB)  # kept: a dropped iterator closes the response
        next(chunks)
        assert httpx.get(url, timeout=10).status_code == 409


def test_tls_transfers_and_power_off_abort(tmp_path):
    from tests.helpers.simulator import running_simulator

    (tmp_path / "vms" / "alpha").mkdir(parents=True)
    with running_simulator(tmp_path / "vms", log_path=tmp_path / "sim.log", tls=True) as sim:
        vi = ViCaller(sim)
        round_trip_in_flat_memory(sim, vi, 64 * MiB, verify=sim.verify)
        url = download_url(sim, vi, "/big")
        got = 0
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("GET", url, timeout=10, verify=sim.verify) as r:
                for chunk in r.iter_raw(MiB):
                    got += len(chunk)
                    if got >= 2 * MiB and got - len(chunk) < 2 * MiB:
                        sim.power("alpha", "poweredOff")
        assert got < 64 * MiB
        assert "internal error" not in (tmp_path / "sim.log").read_text()
        vi.close()
