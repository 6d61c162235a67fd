"""What we know of guest files, for a while: attributes (positive and negative) and directory listings.

Entries die by TTL (`attr_ttl` for attributes and negative lookups, `dir_ttl` for listings) or by exact
invalidation when this mount changes something itself, so a process never sees its own change undone. Keys are
mount paths (see inodes.py). A listing maps each name to the record the listing gave; a record from `stat`
(or one we built after our own change) goes to the attribute cache and overrides the listing's record.

A guest answer may predate a change this mount made while it was on its way (a listing made before our upload
landed arrives after it): take `mark()` before asking, and do not keep an answer for which `changed_since` says
this mount changed the path (or, for a listing, something in the directory) after the mark.

A symlink's own times and owner are what the guest never reports (the agent stats through links: a link's record
carries its target's times and owner). What this mount gave a link (made it: its time and the login's owner;
`touch -h`, `chown -h`) is kept apart (`link_own`) for `attr_ttl` and shown over whatever record of the link the
guest sends meanwhile, listings included; after that the guest's record (the target's) is shown.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Iterable

from cachetools import TTLCache

from guestfs_mount.fs.inodes import is_under, split
from guestfs_mount.vsphere.model import GuestFileInfo

# a cached "no such file" (a missing key means "unknown")
MISSING = None
_UNKNOWN = object()
# seconds our own changes are remembered for `changed_since`: longer than any guest call may take
CHANGES_KEPT = 900.0


def is_complete(info: GuestFileInfo) -> bool:
    """Whether a record has what getattr shows (REST listings give only name, type and size)."""
    return None not in (info.permissions, info.mtime, info.uid, info.gid)


class MetaCache:
    def __init__(self, attr_ttl: float, dir_ttl: float, maxsize: int = 200_000) -> None:
        self.attrs: TTLCache = TTLCache(maxsize=maxsize, ttl=max(attr_ttl, 1e-6), timer=time.monotonic)
        self.listings: TTLCache = TTLCache(maxsize=max(1000, maxsize // 20), ttl=max(dir_ttl, 1e-6),
                                           timer=time.monotonic)
        self.enabled = attr_ttl > 0
        self.hits = self.misses = 0  # lookups the cache answered / could not answer (for `status`)
        self._generation = 0
        # ("path", p) / ("dir", d) -> generation of our last change to path p / to something in directory d
        self._changes: TTLCache = TTLCache(maxsize=maxsize, ttl=CHANGES_KEPT, timer=time.monotonic)
        # symlink path -> (mtime, atime) this mount gave it: the guest cannot tell them (see above)
        self._link_own: TTLCache = TTLCache(maxsize=maxsize, ttl=max(attr_ttl, 1e-6), timer=time.monotonic)

    # --- our own changes against guest answers in flight -------------------------------------------------
    def mark(self) -> int:
        """Taken before a guest call whose answer is to be cached."""
        return self._generation

    def changed_since(self, path: str, mark: int, listing: bool = False) -> bool:
        """Whether this mount changed `path` (or, with `listing`, anything directly in directory `path`) after
        `mark`: a guest answer asked for before then may not show it, and must not be cached."""
        return self._changes.get(("dir" if listing else "path", path), -1) > mark

    def _changed(self, path: str) -> None:
        self._generation += 1
        self._changes[("path", path)] = self._generation
        self._changes[("dir", split(path)[0])] = self._generation

    # --- reading ---------------------------------------------------------------------------------------
    def lookup(self, path: str) -> tuple[bool, GuestFileInfo | None]:
        """(known, record): known is False when the cache cannot tell; record None means "does not exist"."""
        info = self.attrs.get(path, _UNKNOWN)  # one read of the clock: never `in`, then `[]` after expiry
        if info is not _UNKNOWN:
            self.hits += 1
            return True, info
        parent, name = split(path)
        listing = self.listings.get(parent)
        if listing is not None:
            self.hits += 1
            return True, listing.get(name, MISSING)
        self.misses += 1
        return False, None

    def listing(self, path: str) -> dict[str, GuestFileInfo] | None:
        return self.listings.get(path)

    def link_own(self, path: str) -> dict:
        """What this mount gave the symlink `path` within attr_ttl, of `mtime`, `atime`, `uid`, `gid` (a field it
        did not give is absent; nobody knows it)."""
        return dict(self._link_own.get(path) or {})

    # --- filling ---------------------------------------------------------------------------------------
    def put_listing(self, path: str, entries: Iterable[GuestFileInfo]) -> dict[str, GuestFileInfo]:
        listing = {e.name: e for e in entries}
        if self.enabled:
            self.listings[path] = listing
            # a fresh listing is newer than what we knew of its entries, except our own pending changes,
            # which callers overlay separately
            for name in listing:
                self.attrs.pop(f"{path}/{name}" if path else name, None)
        return listing

    def corrected(self, path: str, entries: Iterable[GuestFileInfo]) -> dict[str, GuestFileInfo]:
        """A listing of directory `path` that may predate our own changes there, corrected by the records we hold
        (names we removed go, names we made come): for one answer, never kept."""
        listing = {e.name: e for e in entries}
        prefix = f"{path}/" if path else ""
        for key, info in list(self.attrs.items()):
            if key.startswith(prefix) and "/" not in key[len(prefix):]:
                if info is None:
                    listing.pop(key[len(prefix):], None)
                else:
                    listing[key[len(prefix):]] = info
        return listing

    def put(self, path: str, info: GuestFileInfo | None, ours: bool = True, in_place: bool = False) -> None:
        """Record what a path is now (None: it does not exist), here and in its parent's listing. `ours`: after
        a change this mount made (False: a guest's answer); unless `in_place` (only the entry's own attributes
        changed), the directory holding it changed too (`dir_changed`)."""
        if ours:
            self._changed(path)
            if not in_place:
                self.dir_changed(split(path)[0])
                self._link_own.pop(path, None)  # something new at path: not the link we gave times to
        if self.enabled:
            self.attrs[path] = info
        parent, name = split(path)
        listing = self.listings.get(parent)
        if listing is not None:
            if info is None:
                listing.pop(name, None)
            else:
                listing[name] = dataclasses.replace(info, name=name)

    def put_link_own(self, path: str, info: GuestFileInfo, **given) -> None:
        """The symlink `path` (record `info`) has what this mount just gave it (`mtime`, `atime`, `uid`, `gid`;
        None: not known), added to what it gave it before."""
        self.put(path, info, in_place=True)
        if self.enabled:
            self._link_own[path] = {**self.link_own(path), **{k: v for k, v in given.items() if v is not None}}

    def update(self, path: str, **changes) -> None:
        """Change fields of a known record (after chmod, utimens); unknown paths stay unknown."""
        known, info = self.lookup(path)
        if known and info is not None:
            self.put(path, dataclasses.replace(info, **changes), in_place=True)

    def dir_changed(self, path: str, known: bool = True) -> None:
        """A name was made, removed or replaced in directory `path`: the guest has set its mtime to the time of
        the change, as every file system does, so our record says that time too (`known`), or no time at all
        after a call that may or may not have changed it (the next getattr asks the guest). Either way the time a
        program set on the directory before is gone from our records: rsync, which sets a directory's time before
        and after filling it, sees that it must set it again."""
        if "/" not in path:
            return  # the mount's root and a VM's directory are not the guest's
        self._changed(path)
        mtime = float(math.floor(time.time())) if known else None
        info = self.attrs.get(path)
        if info is not None:
            self.attrs[path] = dataclasses.replace(info, mtime=mtime)
        parent, name = split(path)
        listing = self.listings.get(parent)
        if listing is not None and name in listing:
            listing[name] = dataclasses.replace(listing[name], mtime=mtime)

    def restamp(self, directory: str, listing: dict[str, GuestFileInfo], records: dict[str, GuestFileInfo],
                mark: int) -> None:
        """Records fetched one by one over a long pass (attrfill.py) live from now: attr_ttl for each, dir_ttl
        for the listing they complete, as if all were fetched at the end of the pass. Only while the listing is
        still the pass's (or expired, not replaced) and for what this mount did not change since `mark`."""
        if not self.enabled or self.listings.get(directory, listing) is not listing:
            return
        if not self.changed_since(directory, mark, listing=True):
            self.listings[directory] = listing
        for path, info in records.items():
            if not self.changed_since(path, mark) and self.attrs.get(path, info) is info:
                self.attrs[path] = info

    # --- invalidation ----------------------------------------------------------------------------------
    def forget(self, path: str) -> None:
        """We no longer know what `path` is (after an error that may have half-changed it)."""
        self._changed(path)
        self.attrs.pop(path, None)
        self._link_own.pop(path, None)
        parent, name = split(path)
        self.dir_changed(parent, known=False)
        listing = self.listings.get(parent)
        if listing is not None:
            self.listings.pop(parent, None)

    def remove_tree(self, path: str) -> None:
        """`path` and everything below it no longer exist."""
        self._changed(path)
        for key in [k for k in self.attrs if is_under(k, path)]:
            self.attrs.pop(key, None)  # not `del`, which raises for an entry that expired since it was listed
        for key in [k for k in self.listings if is_under(k, path)]:
            self.listings.pop(key, None)
        self._drop_link_own(path)
        self.put(path, MISSING)

    def drop_tree(self, path: str) -> tuple[int, int]:
        """Forget every record and listing of `path` and below (and the parent's listing, which holds a record
        of `path`): `guestfs-mount refresh`. Unlike `remove_tree` nothing is known afterwards, not even that
        the path is missing. Returns how many records and listings were dropped."""
        self._changed(path)  # an answer asked for before the refresh is not kept after it
        records = [k for k in self.attrs if is_under(k, path)]
        listings = [k for k in self.listings if is_under(k, path)]
        if path:
            listings += [k for k in (split(path)[0],) if k in self.listings and k not in listings]
        for key in records:
            self.attrs.pop(key, None)
        for key in listings:
            self.listings.pop(key, None)
        self._drop_link_own(path)
        return len(records), len(listings)

    def _drop_link_own(self, path: str) -> None:
        for key in [k for k in self._link_own if is_under(k, path)]:
            self._link_own.pop(key, None)

    def rename(self, old: str, new: str, info: GuestFileInfo) -> None:
        moved = self._link_own.get(old)  # a rename keeps what a link was given (rsync renames a new link in place)
        self.remove_tree(new)
        self.remove_tree(old)
        self.put(new, info)
        if moved is not None:
            self._link_own[new] = moved

    def figures(self) -> dict[str, int]:
        """Counts for `guestfs-mount status` (expired entries dropped first)."""
        self.attrs.expire()
        self.listings.expire()
        negative = sum(1 for info in self.attrs.values() if info is None)
        return {"attrs_cached": len(self.attrs) - negative, "negative_cached": negative,
                "listings_cached": len(self.listings), "cache_hits": self.hits, "cache_misses": self.misses}

    def clear(self) -> None:
        self.attrs.clear()
        self.listings.clear()
        self._link_own.clear()
