"""Write-only opens that make a file anew (cp, dd, tar, a shell's `>`) bypass the kernel's page cache
(operations.py, `_past_page_cache`): their bytes are in the spool already. What must not change: readers of a
file being written see what was written, O_RDWR opens keep mmap, a file rewritten after it was read shows the new
bytes."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys

from tests.helpers.mountfs import mounted_guestfs


def test_a_reader_beside_a_whole_file_writer_sees_every_write(tmp_path):
    """The writer's bytes never enter the page cache: a reader that opens meanwhile bypasses it too, so the page
    it read at the old end of the file is not served again, stale, once the writer has gone past it."""
    with mounted_guestfs(tmp_path) as gm:
        data = os.urandom(300_003)  # ends mid-page, as each step does
        path = gm.vm / "growing"
        writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(writer, data[:100_001])
            reader = os.open(path, os.O_RDONLY)
            try:
                assert os.pread(reader, 200_000, 0) == data[:100_001]
                os.write(writer, data[100_001:200_002])
                assert os.pread(reader, 300_000, 0) == data[:200_002]  # the partial page read before is not kept
                os.write(writer, data[200_002:])
                assert os.pread(reader, 400_000, 90_000) == data[90_000:]
            finally:
                os.close(reader)
        finally:
            os.close(writer)
        assert (gm.guest_dir("vm1") / "growing").read_bytes() == data


def test_rewriting_a_file_that_was_read_shows_the_new_bytes(tmp_path):
    with mounted_guestfs(tmp_path) as gm:
        (gm.vm / "f").write_bytes(b"old content " * 1000)
        assert (gm.vm / "f").read_bytes() == b"old content " * 1000  # now in the page cache
        new = os.urandom(20_000)
        src = tmp_path / "new"
        src.write_bytes(new)
        subprocess.run(["cp", src, gm.vm / "f"], check=True, timeout=60)  # O_WRONLY|O_TRUNC: past the cache
        assert (gm.vm / "f").read_bytes() == new
        out = subprocess.run(["dd", f"if={src}", f"of={gm.vm / 'g'}", "bs=4k", "status=none"], timeout=60)
        assert out.returncode == 0 and (gm.vm / "g").read_bytes() == new
        assert (gm.guest_dir("vm1") / "f").read_bytes() == new


def test_a_file_opened_read_write_can_still_be_mapped_shared_and_written(tmp_path):
    """O_RDWR opens keep the page cache: mmap(MAP_SHARED) works (on a direct-io file it fails with ENODEV), and what
    is written through the mapping reaches the guest at close."""
    with mounted_guestfs(tmp_path) as gm:
        (gm.vm / "m").write_bytes(b"\0" * 8192)
        script = (
            "import mmap, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n"
            "m[100:105] = b'hello'; m[8000:8005] = b'world'; m.flush(); m.close(); os.close(fd)\n")
        out = subprocess.run([sys.executable, "-c", script, str(gm.vm / "m")], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        want = bytearray(8192)
        want[100:105], want[8000:8005] = b"hello", b"world"
        assert (gm.guest_dir("vm1") / "m").read_bytes() == bytes(want)
        with open(gm.vm / "m", "rb") as f:  # and read through a mapping of a read-only open
            assert mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)[8000:8005] == b"world"
