"""Flow control for guest calls: a per-VM limit on concurrent calls (each is a guest login, and guests refuse
too many at once), and bounded retries with exponential backoff and jitter for the faults that mean "busy".

Calls come in two classes (`guestfiles.Priority`): interactive (a program waits for the answer) and background
(a prefetch). A background call takes one of its VM's slots only when no interactive call is waiting for one and
two other slots stay free: one for the program it reads ahead of, which may come to wait for a prefetch (that
prefetch is then promoted, `Priority.promote`: interactive from then on), and one for any other program. While a
promoted call holds a slot, that slot is the first of the two. With `max_guest_calls_per_vm` 2 one slot stays
free; with 1 background calls never run.
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


BACKGROUND, PROMOTED, INTERACTIVE = "background", "promoted", "interactive"


def _kind(priority: Priority | None) -> str:
    if priority is None:
        return INTERACTIVE
    return BACKGROUND if priority.background else PROMOTED


class _Waiter:
    __slots__ = ("event", "granted", "kind")

    def __init__(self, kind: str) -> None:
        self.event = trio.Event()
        self.granted = False
        self.kind = kind  # the class of slot it waits for (and is granted)


class VMSlots:
    """The guest-call slots of one VM: `limit` at once. Interactive calls (promoted ones too) take any free slot,
    first come, first served; background calls one only when no interactive call waits and `reserve` slots stay
    free after it, counting those promoted calls hold (all but one of them)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserve = max(1, min(2, limit - 1))  # slots a background call leaves free
        self.busy = 0
        self.held = {BACKGROUND: 0, PROMOTED: 0, INTERACTIVE: 0}  # slots by class of holder
        self._interactive: deque[_Waiter] = deque()  # programs' calls and promoted ones
        self._background: deque[_Waiter] = deque()

    @property
    def background_busy(self) -> int:
        return self.held[BACKGROUND]

    def _background_may_start(self) -> bool:
        free_needed = self.reserve - min(self.held[PROMOTED], self.reserve - 1)
        return not self._interactive and self.busy < self.limit - free_needed

    def _take(self, kind: str) -> None:
        self.busy += 1
        self.held[kind] += 1

    def _release(self, kind: str) -> None:
        self.busy -= 1
        self.held[kind] -= 1
        while self.busy < self.limit:
            if self._interactive:
                waiter = self._interactive.popleft()
            elif self._background and self._background_may_start():
                waiter = self._background.popleft()
            else:
                return
            self._take(waiter.kind)
            waiter.granted = True
            waiter.event.set()

    async def _acquire(self, priority: Priority | None) -> str:
        """Wait for a slot; returns the class it was taken as."""
        while True:
            kind = _kind(priority)
            background = kind == BACKGROUND
            if background:
                ready = not self._background and self._background_may_start()
            else:
                ready = not self._interactive and self.busy < self.limit
            if ready:
                self._take(kind)
                await trio.lowlevel.checkpoint()
                return kind
            waiter = _Waiter(kind)
            queue = self._background if background else self._interactive
            queue.append(waiter)
            if background:
                priority._waiting.add(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.granted:
                    self._release(waiter.kind)
                else:
                    queue.remove(waiter)
                raise
            finally:
                if background:
                    priority._waiting.discard(waiter)
            if waiter.granted:
                return waiter.kind
            queue.remove(waiter)  # promoted while waiting: queue again as interactive

    @asynccontextmanager
    async def slot(self, priority: Priority | None = None) -> AsyncIterator[None]:
        kind = await self._acquire(priority)
        try:
            yield
        finally:
            self._release(kind)


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
