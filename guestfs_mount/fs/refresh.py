"""Refresh on demand (`guestfs-mount refresh MOUNTPOINT [PATH]`, SIGHUP): forget what this mount and the kernel
hold of a subtree, so that a change made inside the guest shows now rather than when the TTLs run out.

Our side: the records, negative entries and listings under the path (metacache.py), and the VM list when the
refresh covers a VM's directory or the whole mount. The kernel's side: the attributes and page cache of every
inode under the path (`invalidate_inode`, in a worker thread: it may wait for the kernel's inode locks, which a
request in flight can hold) and its directory entries (`invalidate_entry_async`). Open files keep their handles
and their unsaved bytes: only what was cached is dropped.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

import pyfuse3
import trio

from guestfs_mount.fs.inodes import InodeTable, is_under, split
from guestfs_mount.fs.metacache import MetaCache

log = logging.getLogger(__name__)


async def refresh(path: str, cache: MetaCache, inodes: InodeTable, forget_vms, also: Iterable[dict] = ()) -> dict:
    """Forget the subtree at mount path `path` ("" for everything). `forget_vms()` drops the VM list; `also` are
    other path-keyed caches to clear under `path`. Returns what was dropped, for the answer to the command."""
    records, listings = cache.drop_tree(path)
    if "/" not in path:  # the mount's root or a VM's directory: the VM may have been powered on or off
        forget_vms()
    for other in also:
        for key in [k for k in other if is_under(k, path)]:
            other.pop(key, None)
    nodes = [(node.inode, node.path) for node in inodes.nodes() if is_under(node.path, path)]
    for inode, node_path in nodes:
        parent = inodes.find(split(node_path)[0]) if node_path else None
        if parent is not None:
            pyfuse3.invalidate_entry_async(parent.inode, os.fsencode(split(node_path)[1]), ignore_enoent=True)
    await trio.to_thread.run_sync(_invalidate_inodes, [inode for inode, _ in nodes])
    log.info("refreshed %s: %d records and %d listings dropped, %d inodes invalidated in the kernel",
             f"/{path}" if path else "the whole mount", records, listings, len(nodes))
    return {"path": path, "records": records, "listings": listings, "inodes": len(nodes)}


def _invalidate_inodes(inodes: list[int]) -> None:
    for inode in inodes:
        try:
            pyfuse3.invalidate_inode(inode, attr_only=False)
        except OSError as e:  # ENOENT: the kernel has already let it go
            log.debug("invalidate_inode(%d): %s", inode, e)
