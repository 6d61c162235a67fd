"""Spool files left behind by a mount that never stopped (SIGKILL, a crash, a power cut), dealt with at the next
start, before the new mount makes any spool file of its own.

A spool file is `<pid>-<n>.spool` in spool_dir. One whose pid is not a running process is a leftover; so is one
with our own pid (a restarted container reuses pids, and no spool of ours exists yet). Spools of another running
process (a second mount given the same spool_dir) are left alone.

- With a sidecar `<spool>.path` (spool.py writes it before the first byte of a local change and removes it once
  the upload is done) it held changes that may never have reached the guest, perhaps their only copy: it is moved,
  never deleted, into the recovery directory under the guest path the sidecar names, with one log line naming both.
- Without one it was only a copy of a guest file made for reading (or an empty new file): it is deleted, and one
  line says how many such files and bytes went.
- A content cache directory `cache-<pid>` (contentcache.py) holds only copies of what the guest had, never unsaved
  bytes (a spool goes there only when clean): it is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from guestfs_mount.fs import recovery
from guestfs_mount.fs.spool import sidecar_path

log = logging.getLogger(__name__)

_SPOOL = re.compile(r"(\d+)-(\d+)\.spool")
_CACHE = re.compile(r"cache-(\d+)")
_SIDECAR = re.compile(r"(\d+)-(\d+)\.spool\.path(\.tmp)?")


@dataclass
class Leftovers:
    """What `recover_leftovers` did, for its caller and tests."""

    kept: list[tuple[str | None, Path]]  # (guest path or None when unknown, where the bytes are now)
    deleted: int = 0  # spools that held only downloaded copies
    deleted_bytes: int = 0
    failed: int = 0  # spools that could not be moved: left where they are


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _sidecar(sidecar: Path) -> tuple[str | None, int | None]:
    """The guest path a sidecar names, and the content's length when the spool held a spare's stale bytes past
    it (spool.py)."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        path = record["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    length = record.get("length")
    return (path if isinstance(path, str) and path else None,
            length if isinstance(length, int) and length >= 0 else None)


def recover_leftovers(spool_dir: Path, recovery_dir: Path) -> Leftovers:
    """Move the leftover spool files of dead processes holding unsaved bytes to `recovery_dir`, delete those that
    were download copies, log what was done. Never raises for one bad file."""
    result = Leftovers(kept=[])
    try:
        names = sorted(os.listdir(spool_dir))
    except OSError as e:
        log.warning("leftover spool files in %s not checked: %s", spool_dir, e)
        return result
    for name in names:
        cache = _CACHE.fullmatch(name)
        if cache is not None and not _running(int(cache[1])):
            shutil.rmtree(spool_dir / name, ignore_errors=True)  # copies of guest files only
            continue
        m = _SPOOL.fullmatch(name)
        if m is None or _running(int(m[1])):
            continue
        spool = spool_dir / name
        sidecar = sidecar_path(spool)
        if not sidecar.exists():
            try:
                size = spool.stat().st_size
                spool.unlink()
            except OSError as e:
                log.warning("leftover spool file %s (a download copy) not removed: %s", spool, e)
                continue
            result.deleted += 1
            result.deleted_bytes += size
            continue
        path, length = _sidecar(sidecar)
        try:
            if length is not None and spool.stat().st_size > length:
                os.truncate(spool, length)  # the rest is a spare's, already on the guest
            dest = recovery.keep(recovery_dir, path or f"unknown-path/{name}", spool, move=True)
        except OSError as e:
            result.failed += 1
            log.error("leftover spool file %s of process %s, which did not stop cleanly, holds unsaved changes "
                      "to %s and could not be moved to %s: %s; it stays where it is", spool, m[1],
                      path or "an unknown guest path", recovery_dir, e)
            continue
        result.kept.append((path, dest))
        log.error("leftover spool file %s of process %s, which did not stop cleanly, held changes to %s that may "
                  "not have reached the guest: moved to %s", spool, m[1], path or "an unknown guest path", dest)
        sidecar.unlink(missing_ok=True)
    _remove_orphan_sidecars(spool_dir)
    if result.deleted:
        log.info("removed %d leftover spool file(s) (%d bytes) of processes that did not stop cleanly: copies of "
                 "guest files made for reading, no unsaved changes", result.deleted, result.deleted_bytes)
    return result


def _remove_orphan_sidecars(spool_dir: Path) -> None:
    """A sidecar whose spool is gone (a crash between the two unlinks at close) names nothing to keep."""
    for name in os.listdir(spool_dir):
        m = _SIDECAR.fullmatch(name)
        if m is None or _running(int(m[1])):
            continue
        if not (spool_dir / f"{m[1]}-{m[2]}.spool").exists():
            (spool_dir / name).unlink(missing_ok=True)
