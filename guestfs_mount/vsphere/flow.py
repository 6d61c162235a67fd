"""Flow control for guest calls: a per-VM limit on concurrent calls (each is a guest login, and guests refuse
too many at once), and bounded retries with exponential backoff and jitter for the faults that mean "busy"."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from typing import Awaitable, Callable, TypeVar

import trio

from guestfs_mount.vsphere.faultmap import is_retryable
from guestfs_mount.vsphere.faults import VSphereError

log = logging.getLogger(__name__)
T = TypeVar("T")

BASE_DELAY = 0.2  # seconds before the first retry; doubles each time
MAX_DELAY = 5.0


class GuestCallLimiter:
    """One trio.CapacityLimiter per VM, made on first use."""

    def __init__(self, per_vm: int):
        self._limiters: dict[str, trio.CapacityLimiter] = defaultdict(lambda: trio.CapacityLimiter(per_vm))

    def __call__(self, vm: str) -> trio.CapacityLimiter:
        return self._limiters[vm]


def backoff(attempt: int) -> float:
    """Full jitter: a random pause up to the exponential bound, so retries from many tasks do not align."""
    return random.uniform(BASE_DELAY / 2, min(MAX_DELAY, BASE_DELAY * 2**attempt))


async def with_retries(call: Callable[[], Awaitable[T]], retries: int, what: str) -> T:
    """`call()`, again after a pause when it fails with a busy-type fault, at most `retries` more times."""
    attempt = 0
    while True:
        try:
            return await call()
        except VSphereError as e:
            if not is_retryable(e) or attempt >= retries:
                raise
            delay = backoff(attempt)
            attempt += 1
            log.info("%s: %s; retry %d of %d in %.1fs", what, getattr(e, "fault", e), attempt, retries, delay)
            await trio.sleep(delay)
