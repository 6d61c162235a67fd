"""Randomized model testing: one random operation applied to a file through the mount and to a local model file
at once, the mount's answers checked against the model's (FUSE-NOTES checklist item 16)."""

from __future__ import annotations

import os
import random


class ModelSteps:
    """Random writes, reads, truncates and stats on (`fd`, `md`): the mount's descriptor and the model's. `far`:
    how far past the end a write or truncate may reach besides the usual few KiB (0: never far)."""

    def __init__(self, rng: random.Random, seed: int, far: int = 0) -> None:
        self.rng, self.seed, self.far = rng, seed, far
        self.steps: list[tuple] = []

    def check(self, cond: bool, what: str) -> None:
        assert cond, f"seed {self.seed}: {what} after steps {self.steps[-12:]}"

    def one(self, fd: int, md: int, reader: int | None = None) -> None:
        """One operation; a read goes through `reader` (another descriptor of the same file) half the time."""
        rng = self.rng
        size = os.fstat(md).st_size
        far = bool(self.far) and rng.random() < 0.3
        op = rng.choice(["write", "write", "read", "read", "truncate", "seek-read", "stat"])
        if op == "write":
            off = rng.randint(0, size + (self.far if far else 5000))
            data = rng.randbytes(rng.choice([1, 17, 4096, 70_000, 300_000]))
            self.steps.append(("write", off, len(data)))
            assert os.pwrite(fd, data, off) == os.pwrite(md, data, off) == len(data)
        elif op in ("read", "seek-read"):
            off = rng.randint(0, size + 10)
            n = rng.choice([1, 100, 4096, 200_000])
            via = reader if reader is not None and rng.random() < 0.5 else fd
            self.steps.append(("read", off, n) + (("reader",) if via != fd else ()))
            self.check(os.pread(via, n, off) == os.pread(md, n, off), f"read {off}+{n}")
        elif op == "truncate":
            new = rng.randint(0, size + (self.far if far else 100_000))
            self.steps.append(("truncate", new))
            os.ftruncate(fd, new)
            os.ftruncate(md, new)
        else:
            self.steps.append(("stat",))
            self.check(os.fstat(fd).st_size == os.fstat(md).st_size, "size")

    def run(self, fd: int, md: int, count: int, reader: int | None = None) -> None:
        for _ in range(count):
            self.one(fd, md, reader)


