"""PendingAttributes: chmod/touch held to share one guest call (unit tests; the mount-level ones are in
test_mount_costs.py)."""

from guestfs_mount.fs.pendingattrs import PendingAttributes


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_changes_in_a_row_merge_and_fall_due_after_the_delay():
    clock = Clock()
    p = PendingAttributes(1.0, clock=clock)
    p.hold("vm/f", {"mtime": 5.0})
    clock.now += 0.5
    p.hold("vm/f", {"permissions": 0o644})
    assert p.due() == []  # due 1 s after the first change, not pushed back by the second
    clock.now += 0.6
    assert p.due() == ["vm/f"]
    held = p.take("vm/f")
    assert (held.mtime, held.permissions, held.uid) == (5.0, 0o644, None)
    assert p.take("vm/f") is None and len(p) == 0


def test_only_mode_and_times_are_held_and_never_with_no_delay():
    assert PendingAttributes(1.0).holdable({"permissions": 0o600, "atime": 1.0})
    assert not PendingAttributes(1.0).holdable({"permissions": 0o600, "uid": 0})
    assert not PendingAttributes(1.0).holdable({})
    assert not PendingAttributes(0).holdable({"mtime": 1.0})


def test_rename_moves_a_tree_and_drops_what_it_replaces():
    p = PendingAttributes(1.0)
    p.hold("vm/a/x", {"mtime": 1.0})
    p.hold("vm/b/y", {"mtime": 2.0})
    p.rename("vm/a", "vm/b")
    assert p.paths() == ["vm/b/x"] and p.as_changes("vm/b/x") == {"mtime": 1.0}
    p.drop_tree("vm/b")
    assert p.paths() == []
