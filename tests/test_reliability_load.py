"""Load: 32 concurrent workers write, overwrite, append, read, rename and delete files across 4 VMs through one
mount for 10 s (CI) or 60 s (`--run-slow` / GUESTFS_SLOW=1), then the sha256 of every file is checked through the
mount and directly in the simulator's directories against what the workers wrote.

Each worker owns one directory (`vmK/wNN`) and keeps a model of it (name -> bytes), so every check is exact: a
read of its own file, a listing of its directory, a stat's size. Reads of files others wrote go to files each
worker publishes once and never changes (`vmK/shared/wNN-n`). 28 workers use os/open/shutil from threads; 4 run
`cp` and `cat` as subprocesses. Any error is unexpected. The figures (operations, errors, bytes, peak RSS of the
mount process from VmHWM) are printed: `pytest -s` shows them. GUESTFS_LOAD_SECONDS sets the short form's length,
GUESTFS_LOAD_SEED replays a run's choices (printed with the figures; thread timing still varies).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.mounting import wait_until
from tests.helpers.mountfs import mounted_guestfs

VMS = ("vm1", "vm2", "vm3", "vm4")
WORKERS = 32
PROGRAM_WORKERS = 4  # workers that write with cp and read with cat
MAX_FILES = 10  # per worker: bounds the model's memory
SIZES = (0, 1, 100, 4096, 65536, 200_000, 1 << 20)
SIZE_WEIGHTS = (1, 2, 3, 4, 4, 3, 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@dataclass
class Shared:
    """What all workers see: the immutable files published so far, and the errors."""

    published: list[tuple[Path, str]] = field(default_factory=list)  # (path in the mount, sha256)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


class Worker:
    def __init__(self, n: int, mp: Path, shared: Shared, deadline: float, seed: int, programs: bool, tmp: Path):
        self.n, self.shared, self.deadline, self.programs = n, shared, deadline, programs
        self.vm = VMS[n % len(VMS)]
        self.rel = f"{self.vm}/w{n:02d}"
        self.dir = mp / self.rel
        self.shared_dir = mp / self.vm / "shared"
        self.rng = random.Random(seed * 1000 + n)
        self.model: dict[str, bytes] = {}
        self.ops: Counter = Counter()
        self.bytes_written = self.bytes_read = 0
        self.serial = 0
        self.published = 0
        self.scratch = tmp / f"w{n:02d}.src"  # what cp copies from
        self.history: deque[str] = deque(maxlen=8)  # the last operations, for an error's message

    # --- helpers ------------------------------------------------------------------------------------------
    def data(self) -> bytes:
        return self.rng.randbytes(self.rng.choices(SIZES, SIZE_WEIGHTS)[0])

    def new_name(self) -> str:
        self.serial += 1
        return f"f{self.serial}"

    def put(self, path: Path, data: bytes) -> None:
        if self.programs:
            self.scratch.write_bytes(data)
            p = subprocess.run(["cp", str(self.scratch), str(path)], capture_output=True, text=True, timeout=120)
            if p.returncode:
                raise OSError(f"cp exited {p.returncode}: {p.stderr.strip()}")
        else:
            with open(path, "wb") as f:
                f.write(data)
        self.bytes_written += len(data)

    def get(self, path: Path) -> bytes:
        if self.programs:
            p = subprocess.run(["cat", str(path)], capture_output=True, timeout=120)
            if p.returncode:
                raise OSError(f"cat exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
            data = p.stdout
        else:
            with open(path, "rb") as f:
                data = f.read()
        self.bytes_read += len(data)
        return data

    def note(self, text: str) -> None:
        self.history.append(f"{time.monotonic():.2f} {text}")

    def error(self, text: str) -> None:
        self.shared.error(f"{self.rel}: {text} (t={time.monotonic():.2f}; before: {list(self.history)})")

    def check(self, what: str, got, want) -> None:
        if got != want:
            self.error(f"{what}: got {got!r:.200}, want {want!r:.200}")

    # --- operations ---------------------------------------------------------------------------------------
    def op_new(self):
        if len(self.model) >= MAX_FILES:
            return self.op_delete()
        name, data = self.new_name(), self.data()
        self.put(self.dir / name, data)
        self.model[name] = data

    def op_overwrite(self, name):
        data = self.data()
        self.put(self.dir / name, data)
        self.model[name] = data

    def op_append(self, name):
        extra = self.rng.randbytes(self.rng.choice((1, 10, 4096, 65536)))
        with open(self.dir / name, "ab") as f:
            f.write(extra)
        self.model[name] += extra
        self.bytes_written += len(extra)

    def op_read(self, name):
        self.check(f"read {name}", sha(self.get(self.dir / name)), sha(self.model[name]))

    def op_stat(self, name):
        self.check(f"size of {name}", os.stat(self.dir / name).st_size, len(self.model[name]))

    def op_list(self):
        names = set(os.listdir(self.dir))
        if names != set(self.model):
            self.error(f"listing: missing {sorted(set(self.model) - names)}, extra {sorted(names - set(self.model))}")

    def op_rename(self, name):
        new = self.new_name()
        os.rename(self.dir / name, self.dir / new)
        self.model[new] = self.model.pop(name)

    def op_delete(self, name=None):
        name = name or self.rng.choice(sorted(self.model))
        os.unlink(self.dir / name)
        del self.model[name]

    def op_read_others(self):
        with self.shared.lock:
            if not self.shared.published:
                return
            path, digest = self.rng.choice(self.shared.published)
        self.check(f"read of {path.name} (written by another worker)", sha(self.get(path)), digest)

    def op_publish(self):
        data = self.data()
        path = self.shared_dir / f"w{self.n:02d}-{self.published}"
        self.published += 1
        self.put(path, data)
        with self.shared.lock:
            self.shared.published.append((path, sha(data)))

    def step(self) -> str:
        if not self.model:
            kind = "new"
        else:
            kind = self.rng.choices(
                ("new", "overwrite", "append", "read", "stat", "list", "rename", "delete", "read_others", "publish"),
                (5, 3, 3, 5, 2, 1, 2, 2, 3, 1))[0]
        name = self.rng.choice(sorted(self.model)) if self.model else None
        self.kind = kind
        self.note(f"{kind} {name if kind in ('overwrite', 'append', 'read', 'stat', 'rename', 'delete') else ''}"
                  f"{' -> f' + str(self.serial + 1) if kind in ('new', 'rename') else ''}")
        if kind in ("overwrite", "append", "read", "stat", "rename", "delete"):
            getattr(self, f"op_{kind}")(name)
        else:
            getattr(self, f"op_{kind}")()
        return kind

    def run(self) -> None:
        try:
            self.dir.mkdir()
        except OSError as e:
            self.shared.error(f"{self.rel}: mkdir: {e!r}")
            return
        while time.monotonic() < self.deadline:
            self.kind = "?"
            try:
                self.ops[self.step()] += 1
            except Exception as e:  # every error is unexpected: counted, and the worker goes on
                self.error(f"{self.kind}: {type(e).__name__}: {e}")  # str() names the file
                self.ops["failed"] += 1
                # the model no longer knows this directory for sure: learn it anew from the guest's truth
                self.resync()

    def resync(self) -> None:
        try:
            self.model = {name: (self.dir / name).read_bytes() for name in os.listdir(self.dir)}
        except OSError as e:
            self.shared.error(f"{self.rel}: resync: {e!r}")


def run_load(tmp_path: Path, seconds: float, api: str = "vi-json") -> None:
    seed = int(os.environ.get("GUESTFS_LOAD_SEED", "0")) or random.randrange(1, 1 << 30)
    with mounted_guestfs(tmp_path, api, vms=VMS) as m:
        for vm in VMS:
            (m.vm_dir(vm) / "shared").mkdir()
        shared = Shared()
        deadline = time.monotonic() + seconds
        workers = [Worker(n, m.mp, shared, deadline, seed, n < PROGRAM_WORKERS, tmp_path) for n in range(WORKERS)]
        threads = [threading.Thread(target=w.run, daemon=True, name=f"load-{w.n}") for w in workers]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 180)
        elapsed = time.monotonic() - t0
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"workers still in a call 180 s after the end: {stuck}; log: {m.log()[-3000:]}"

        # every file, through the mount and on the guest, against the models
        mismatches: list[str] = []
        checked = 0
        for w in workers:
            guest_dir = m.guest_dir(w.vm) / f"w{w.n:02d}"
            on_guest = sorted(p.name for p in guest_dir.iterdir())
            if on_guest != sorted(w.model):
                mismatches.append(f"{w.rel}: guest has {on_guest}, the worker wrote {sorted(w.model)}")
            for name, data in w.model.items():
                want = sha(data)
                checked += 1
                for where, path in (("mount", w.dir / name), ("guest", guest_dir / name)):
                    try:
                        got = file_sha(path)
                    except OSError as e:
                        got = repr(e)
                    if got != want:
                        mismatches.append(f"{w.rel}/{name} via the {where}: {got[:16]} != {want[:16]}")
        for path, want in shared.published:
            checked += 1
            guest_path = m.root / path.relative_to(m.mp)
            for where, p in (("mount", path), ("guest", guest_path)):
                got = file_sha(p)
                if got != want:
                    mismatches.append(f"{path.relative_to(m.mp)} via the {where}: {got[:16]} != {want[:16]}")

        rss = peak_rss_kib(m.proc.pid)
        ops = sum((w.ops for w in workers), Counter())
        written = sum(w.bytes_written for w in workers)
        read = sum(w.bytes_read for w in workers)
        total = sum(v for k, v in ops.items() if k != "failed")
        print(f"\nload ({api}): {WORKERS} workers ({PROGRAM_WORKERS} with cp/cat) on {len(VMS)} VMs for {elapsed:.1f} s "
              f"(seed {seed}): {total} operations ({total / elapsed:.0f}/s), {dict(sorted(ops.items()))}; "
              f"{written / 2**20:.1f} MiB written, {read / 2**20:.1f} MiB read; {checked} files checked, "
              f"{len(mismatches)} mismatches, {len(shared.errors)} errors; mount peak RSS {rss / 1024:.1f} MiB")
        assert not shared.errors, "\n".join(shared.errors[:20])
        assert not mismatches, "\n".join(mismatches[:20])
        assert "Traceback" not in m.log(), m.log()[-3000:]
        assert total > WORKERS * 5, "the load did almost nothing"
        # every file was closed: the kernel's releases (sent after close returns) delete the spool files
        assert wait_until(lambda: not m.spool_files(), 5), m.spool_files()
    assert not (tmp_path / "recovered").exists(), "an upload failed under load"


@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_load_32_workers_4_vms_short(tmp_path, api):
    run_load(tmp_path, float(os.environ.get("GUESTFS_LOAD_SECONDS", "10")), api)


@pytest.mark.slow
@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_load_32_workers_4_vms_60s(tmp_path, api):
    run_load(tmp_path, 60, api)


@pytest.mark.parametrize("api", ["vi-json", "soap", "rest"])
def test_close_uploads_although_an_earlier_closed_handle_is_not_released_yet(tmp_path, api):
    """The race the load test found, made certain: a handle whose fd was closed (flushed) but not yet released
    counted as a writer still at work, so the next writer's close returned before its upload, and the
    program's rename right after moved the old content (the upload then landed under the old name). Under load
    the kernel queued the release; here an mmap holds it."""
    import mmap

    def setup(vm1):
        (vm1 / "f").write_bytes(b"old content\n")

    with mounted_guestfs(tmp_path, api, setup=setup) as m:
        fd = os.open(m.vm / "f", os.O_RDWR)
        held = mmap.mmap(fd, 0, prot=mmap.PROT_READ)  # keeps the handle after close: FLUSH now, RELEASE at close()
        os.close(fd)
        try:
            with open(m.vm / "f", "wb") as f:
                f.write(b"new content\n")
            assert (m.guest / "f").read_bytes() == b"new content\n"  # on the guest when close returns
            os.rename(m.vm / "f", m.vm / "g")
            assert (m.guest / "g").read_bytes() == b"new content\n"
            assert not (m.guest / "f").exists()
        finally:
            held.close()
        assert (m.vm / "g").read_bytes() == b"new content\n"
        assert wait_until(lambda: not m.spool_files(), 5), m.spool_files()
        assert not (m.guest / "f").exists() and not m.recovered.exists()


def test_a_rename_during_an_upload_moves_the_uploaded_file(tmp_path):
    """One thread closes a file (its upload in flight, throttled to ~1 s), another renames it meanwhile: the
    rename waits for the upload and moves the new content; no copy is left under the old name."""

    def setup(vm1):
        (vm1 / "f").write_bytes(b"old content\n")

    new = os.urandom(128 << 10)
    with mounted_guestfs(tmp_path, setup=setup) as m:
        m.sim.throttle("vm1", 128 << 10)
        closed: list[object] = []

        def write_and_close():
            try:
                with open(m.vm / "f", "wb") as f:
                    f.write(new)
                closed.append("ok")
            except OSError as e:
                closed.append(e)

        writer = threading.Thread(target=write_and_close, daemon=True)
        writer.start()
        assert wait_until(lambda: any(p.name.startswith(".guestfs-sim-") and p.stat().st_size > 0
                                      for p in m.guest.iterdir()), 20)
        os.rename(m.vm / "f", m.vm / "g")
        writer.join(timeout=30)
        assert closed == ["ok"]
        assert (m.guest / "g").read_bytes() == new
        assert not (m.guest / "f").exists()
        got = (m.vm / "g").read_bytes()
        assert (len(got), got == new) == (len(new), True), (got[:20], got.find(new[:50]), got[-20:], new[-20:])


async def test_a_listing_made_before_our_upload_landed_is_not_kept(tmp_path):
    """Another race the load test found (a published file read as ENOENT): a directory listing the guest made
    before our upload landed, answered after it, was cached for dir_ttl; once our own record of the file expired
    (attr_ttl), the stale listing said the file did not exist. Such a listing is now asked again, not kept."""
    import pyfuse3
    import trio

    from guestfs_mount.fs.operations import GuestOperations
    from guestfs_mount.fs.settings import MountSettings
    from guestfs_mount.vsphere.model import GuestCredentials
    from tests.helpers.localguest import LocalGuest

    (tmp_path / "vms" / "vm1").mkdir(parents=True)
    guest = LocalGuest(tmp_path / "vms")
    settings = MountSettings(spool_dir=tmp_path / "spool", recovery_dir=tmp_path / "rec", attr_ttl=0.3, dir_ttl=30)
    ops = GuestOperations(guest, lambda vm: GuestCredentials("root", "vmware"), settings)
    made, answer = trio.Event(), trio.Event()
    plain_list = guest.list_dir
    listings = []

    async def list_now_answer_later(*args):
        listings.append(args[2])
        entries = [e async for e in plain_list(*args)]
        if not made.is_set():  # the first listing only
            made.set()
            await answer.wait()
        for e in entries:
            yield e

    guest.list_dir = list_now_answer_later
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        vm = (await ops.lookup(pyfuse3.ROOT_INODE, b"vm1", None)).st_ino
        nursery.start_soon(ops._listing, "vm1")
        await made.wait()
        fi, _ = await ops.create(vm, b"new", 0o644, os.O_WRONLY | os.O_CREAT, None)
        await ops.write(fi.fh, 0, b"x")
        await ops.flush(fi.fh)
        await ops.release(fi.fh)
        assert (tmp_path / "vms" / "vm1" / "new").read_bytes() == b"x"
        answer.set()
        await trio.sleep(0.5)  # our record of the file has expired; a kept listing would still live 29 s
        assert "new" in [name for name, _ in await ops._listing("vm1")]
        assert (await ops.lookup(vm, b"new", None)).st_size == 1
        assert listings == ["/", "/"]  # the stale listing was asked again once, the second one kept


async def test_a_stat_made_before_our_upload_landed_does_not_replace_our_record(tmp_path):
    """The same race for one file: a stat the guest answered with the old size, arriving after our upload of the
    new content, replaced our record (size and all) for attr_ttl."""
    import pyfuse3
    import trio

    from guestfs_mount.fs.operations import GuestOperations
    from guestfs_mount.fs.settings import MountSettings
    from guestfs_mount.vsphere.model import GuestCredentials
    from tests.helpers.localguest import LocalGuest

    (tmp_path / "vms" / "vm1").mkdir(parents=True)
    (tmp_path / "vms" / "vm1" / "f").write_bytes(b"old")
    guest = LocalGuest(tmp_path / "vms")
    settings = MountSettings(spool_dir=tmp_path / "spool", recovery_dir=tmp_path / "rec", attr_ttl=30, dir_ttl=30)
    ops = GuestOperations(guest, lambda vm: GuestCredentials("root", "vmware"), settings)
    made, answer = trio.Event(), trio.Event()
    plain_stat = guest.stat
    stat_args = []

    async def stat_now_answer_later(*args):
        info = await plain_stat(*args)
        if args[2] == "/f" and not made.is_set():
            stat_args[:] = args
            made.set()
            await answer.wait()
        return info

    guest.stat = stat_now_answer_later
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        vm = (await ops.lookup(pyfuse3.ROOT_INODE, b"vm1", None)).st_ino
        nursery.start_soon(ops._record, "vm1/f")  # a stat nobody has an answer for yet
        await made.wait()
        ops.cache.put("vm1/f", await plain_stat(*stat_args), ours=False)  # what the kernel's own lookup learned
        inode = ops.inodes.inode_for("vm1/f")
        ops.inodes.add_lookup(inode)
        fi = await ops.open(inode, os.O_WRONLY | os.O_TRUNC, None)
        await ops.write(fi.fh, 0, b"new content")
        await ops.flush(fi.fh)
        await ops.release(fi.fh)
        answer.set()
        await trio.sleep(0.1)
        assert (await ops.getattr(inode, None)).st_size == len(b"new content")


@pytest.mark.parametrize("case", ["shared", "outlived"])
def test_lookups_answered_by_one_slow_listing_find_their_files(tmp_path, case):
    """The load test's last race (a published file read as ENOENT, in every dialect, about one 60 s run in two):
    once a third name of a directory misses the cache within attr_ttl, the directory is listed instead of that
    name stat'ed, and the miss count is cleared afterwards. A second miss that joined the listing the first had
    started (`shared`: an open file's getattr beside a lookup; the kernel serialises lookups in one directory,
    not getattrs), or a listing slower than the count's attr_ttl (`outlived`), found the count already gone: the
    KeyError of clearing it came out of the handler as ENOENT for a file the listing had just shown."""
    from concurrent.futures import ThreadPoolExecutor

    def setup(vm1):
        (vm1 / "d").mkdir()
        for i in range(4):
            (vm1 / "d" / f"f{i}").write_bytes(b"x" * i)

    attr_ttl, latency_ms = (3.0, 1000) if case == "shared" else (1.0, 1500)
    with mounted_guestfs(tmp_path, attr_ttl=attr_ttl, dir_ttl=attr_ttl, setup=setup) as m:
        d = m.vm / "d"
        with open(d / "f3", "rb") as f3:
            time.sleep(attr_ttl + 0.2)  # every record, here and in the kernel, and the miss count expire
            assert [os.stat(d / n).st_size for n in ("f0", "f1")] == [0, 1]  # two misses: a stat each
            m.sim.latency("vm1", latency_ms)
            m.reset_stats()
            calls = {"shared": [lambda: os.stat(d / "f2").st_size, lambda: os.fstat(f3.fileno()).st_size],
                     "outlived": [lambda: os.stat(d / "f2").st_size]}[case]
            with ThreadPoolExecutor(len(calls)) as pool:  # the third (and fourth) miss: one slow listing
                sizes = [f.result(timeout=30) for f in [pool.submit(c) for c in calls]]
            assert sizes == [2, 3][:len(calls)]
            assert m.stats().get("ListFilesInGuest") == 1, m.stats()  # one listing answered them all
            m.sim.latency("vm1", 0)
        assert sorted(os.listdir(d)) == ["f0", "f1", "f2", "f3"]
        assert "Traceback" not in m.log()
