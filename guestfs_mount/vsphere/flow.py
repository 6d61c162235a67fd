"""Flow control for guest calls: a per-VM limit on concurrent calls (each is a guest login, and guests refuse
too many at once), and bounded retries with exponential backoff and jitter for the faults that mean "busy".

Calls come in two classes (`guestfiles.Priority`): interactive (a program waits for the answer) and background
(a prefetch). A background call takes one of its VM's slots only when no interactive call is waiting for one and
another slot stays free (with `max_guest_calls_per_vm = 1` background calls never run). A background call a
program comes to wait for is promoted (`Priority.promote`): from then on it queues with the interactive calls,
but still leaves the last slot free. So a scan (its prefetches, and its reader waiting for them) never holds every
slot: another program's call finds one free.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import trio

from guestfs_mount.vsphere.faultmap import is_retryable
from guestfs_mount.vsphere.faults import VSphereError
from guestfs_mount.vsphere.guestfiles import Priority, current_priority

log = logging.getLogger(__name__)
T = TypeVar("T")

BASE_DELAY = 0.2  # seconds before the first retry; doubles each time
MAX_DELAY = 5.0


class _Waiter:
    __slots__ = ("event", "granted", "background", "reserve")

    def __init__(self, background: bool, reserve: int) -> None:
        self.event = trio.Event()
        self.granted = False
        self.background = background  # the class of slot it waits for (and is granted)
        self.reserve = reserve  # slots that must stay free after it takes one


class VMSlots:
    """The guest-call slots of one VM: `limit` at once. A program's calls take any free slot, first come, first
    served. A prefetch's (background) calls take one only when no other call waits and another slot stays free
    after theirs; promoted ones (a program waits for that prefetch now) queue with the program's calls but leave
    that last slot free too. So a scan and its prefetches never hold the last slot: another program finds it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.background_busy = 0
        self._interactive: deque[_Waiter] = deque()  # programs' calls and promoted prefetches, in arrival order
        self._background: deque[_Waiter] = deque()

    def _free_after(self, reserve: int) -> bool:
        return self.busy < self.limit - reserve

    def _take(self, background: bool) -> None:
        self.busy += 1
        self.background_busy += background

    def _release(self, background: bool) -> None:
        self.busy -= 1
        self.background_busy -= background
        while True:
            waiter = next((w for w in self._interactive if self._free_after(w.reserve)), None)
            if waiter is not None:
                self._interactive.remove(waiter)
            elif self._background and not self._interactive and self._free_after(1):
                waiter = self._background.popleft()
            else:
                return
            self._take(waiter.background)
            waiter.granted = True
            waiter.event.set()

    async def _acquire(self, priority: Priority | None) -> bool:
        """Wait for a slot; returns whether it is a background slot."""
        while True:
            background = priority is not None and priority.background
            # a prefetch leaves a slot free (with one slot in all it never runs); a promoted one too, unless it
            # cannot (one slot in all: a program waits for it)
            reserve = 1 if background else min(1, self.limit - 1) if priority is not None and priority.promoted else 0
            if background:
                ready = not self._background and not self._interactive and self._free_after(reserve)
            else:
                ready = not any(w.reserve <= reserve for w in self._interactive) and self._free_after(reserve)
            if ready:
                self._take(background)
                await trio.lowlevel.checkpoint()
                return background
            waiter = _Waiter(background, reserve)
            queue = self._background if background else self._interactive
            queue.append(waiter)
            if background:
                priority._waiting.add(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.granted:
                    self._release(waiter.background)
                else:
                    queue.remove(waiter)
                raise
            finally:
                if background:
                    priority._waiting.discard(waiter)
            if waiter.granted:
                return waiter.background
            queue.remove(waiter)  # promoted while waiting: queue again as a promoted call

    @asynccontextmanager
    async def slot(self, priority: Priority | None = None) -> AsyncIterator[None]:
        background = await self._acquire(priority)
        try:
            yield
        finally:
            self._release(background)


class GuestCallLimiter:
    """One `VMSlots` per VM, made on first use."""

    def __init__(self, per_vm: int):
        self._slots: dict[str, VMSlots] = defaultdict(lambda: VMSlots(per_vm))

    def __call__(self, vm: str) -> VMSlots:
        return self._slots[vm]


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


async def limited_call(limiter: GuestCallLimiter, vm: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()` holding one of the VM's slots, of the class the calling task runs under (`call_priority`)."""
    async with limiter(vm).slot(current_priority()):
        return await call()
