"""The per-VM slots of guest calls (vsphere/flow.py): background calls wait for interactive ones and leave them a
slot, a promoted background call queues as interactive, cancelled waiters give their place back; InvalidState is
retried."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from guestfs_mount.vsphere.faultmap import is_retryable, vi_fault_error
from guestfs_mount.vsphere.flow import GuestCallLimiter, VMSlots, limited_call, with_retries
from guestfs_mount.vsphere.guestfiles import Priority, call_priority


async def _hold(slots: VMSlots, priority, started: list, release: trio.Event, name: str) -> None:
    async with slots.slot(priority):
        started.append(name)
        await release.wait()


def test_background_leaves_two_slots_and_waits_for_interactive_calls():
    async def main():
        slots = VMSlots(4)
        started: list[str] = []
        gates = {name: trio.Event() for name in ("bg0", "bg1", "bg2", "bg3", "i0", "i1", "i2")}

        async def start(name, priority):
            n.start_soon(_hold, slots, priority, started, gates[name], name)
            await trio.testing.wait_all_tasks_blocked()

        async with trio.open_nursery() as n:
            for i in range(4):  # one by one: trio starts tasks in no fixed order
                await start(f"bg{i}", Priority())
            assert started == ["bg0", "bg1"]  # a third would leave only one slot free
            await start("i0", None)
            await start("i1", None)
            assert started[-2:] == ["i0", "i1"] and slots.busy == 4  # the two slots left free
            await start("i2", None)
            gates["bg0"].set()  # a slot frees: the interactive call waiting goes first
            await trio.testing.wait_all_tasks_blocked()
            assert started[-1] == "i2" and slots.busy == 4
            gates["i0"].set()
            gates["i1"].set()  # busy 2 of 4: a background call would leave one slot free, not two
            await trio.testing.wait_all_tasks_blocked()
            assert started[-1] == "i2" and slots.busy == 2
            gates["i2"].set()
            await trio.testing.wait_all_tasks_blocked()
            assert started[-1] == "bg2" and slots.busy == 2
            for gate in gates.values():
                gate.set()
        assert slots.busy == slots.background_busy == 0 and sorted(started)[-1] == "i2"

    trio.run(main)


def test_a_promoted_background_call_queues_as_interactive():
    async def main():
        slots = VMSlots(4)
        started: list[str] = []
        gates = {name: trio.Event() for name in ("i0", "i1", "i2", "i3", "late", "bg", "promoted")}
        waiting = Priority()

        async def start(name, priority):
            n.start_soon(_hold, slots, priority, started, gates[name], name)
            await trio.testing.wait_all_tasks_blocked()

        async with trio.open_nursery() as n:
            for name in ("i0", "i1", "i2", "i3"):
                await start(name, None)
            await start("bg", Priority())
            await start("promoted", waiting)
            waiting.promote()  # a program waits for it now
            await trio.testing.wait_all_tasks_blocked()
            await start("late", None)
            assert started == ["i0", "i1", "i2", "i3"]
            gates["i0"].set()  # one slot frees: the promoted call, ahead of the later interactive one
            await trio.testing.wait_all_tasks_blocked()
            assert started[-1] == "promoted" and slots.busy == 4
            gates["i1"].set()
            await trio.testing.wait_all_tasks_blocked()
            assert started[-1] == "late" and "bg" not in started
            n.cancel_scope.cancel()
        assert slots.busy == 0

    trio.run(main)


def test_a_promoted_call_in_flight_counts_as_the_scan_s_own_free_slot():
    async def main():
        slots = VMSlots(4)
        started: list[str] = []
        gates = {name: trio.Event() for name in ("p", "bg0", "bg1", "bg2")}
        promoted = Priority()
        promoted.promote()  # its reader waits for it
        async with trio.open_nursery() as n:
            for name, priority in (("p", promoted), ("bg0", Priority()), ("bg1", Priority()), ("bg2", Priority())):
                n.start_soon(_hold, slots, priority, started, gates[name], name)
                await trio.testing.wait_all_tasks_blocked()
            # the reader's call holds the slot kept for it: two prefetches beside it, one slot free for others
            assert started == ["p", "bg0", "bg1"] and slots.busy == 3 and slots.background_busy == 2
            gates["p"].set()
            await trio.testing.wait_all_tasks_blocked()
            assert started == ["p", "bg0", "bg1"] and slots.busy == 2  # two free again, for the reader and others
            n.cancel_scope.cancel()

    trio.run(main)


def test_cancelled_waiters_leave_no_slot_taken():
    async def main():
        slots = VMSlots(2)
        started: list[str] = []
        release = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(_hold, slots, None, started, release, "a")
            outer.start_soon(_hold, slots, None, started, release, "b")
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05):
                async with trio.open_nursery() as n:
                    for name in ("c", "d"):
                        n.start_soon(_hold, slots, None, started, release, name)
                        await trio.testing.wait_all_tasks_blocked()
                    n.start_soon(_hold, slots, Priority(), started, release, "bg")
            release.set()
        assert sorted(started) == ["a", "b"] and slots.busy == 0
        async with slots.slot(None):  # still usable
            assert slots.busy == 1

    trio.run(main)


def test_call_priority_reaches_limited_calls_in_child_tasks():
    async def main():
        limiter = GuestCallLimiter(2)
        seen = []

        async def call():
            seen.append(limiter("vm").background_busy)

        with call_priority(Priority()):
            async with trio.open_nursery() as n:
                n.start_soon(limited_call, limiter, "vm", call)
        await limited_call(limiter, "vm", call)
        assert seen == [1, 0]

    trio.run(main)


def test_with_max_one_call_a_background_call_waits_until_promoted():
    async def main():
        slots = VMSlots(1)
        priority = Priority()  # and with a limit of 2, one slot stays free
        assert VMSlots(2).reserve == 1 and VMSlots(3).reserve == 2
        started: list[str] = []
        async with trio.open_nursery() as n:
            n.start_soon(_hold, slots, priority, started, trio.Event(), "bg")
            await trio.testing.wait_all_tasks_blocked()
            assert started == []
            priority.promote()
            await trio.testing.wait_all_tasks_blocked()
            assert started == ["bg"]
            n.cancel_scope.cancel()

    trio.run(main)


def test_invalid_state_is_retried_and_then_busy(monkeypatch):
    monkeypatch.setattr("guestfs_mount.vsphere.flow.BASE_DELAY", 0.001)
    error = vi_fault_error({"_typeName": "InvalidState"}, path="/p", vm="vm-1")
    assert is_retryable(error) and error.errno == errno.EBUSY
    assert not is_retryable(vi_fault_error({"_typeName": "InvalidPowerState"}))
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "ok"

    assert trio.run(with_retries, flaky, 5, "test") == "ok" and len(calls) == 3

    async def always():
        raise error

    with pytest.raises(type(error)):
        trio.run(with_retries, always, 2, "test")
