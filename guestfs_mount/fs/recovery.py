"""The recovery directory: where bytes that did not reach the guest are kept. The program never deletes anything
there.

`keep` puts a file (a copy, or the file itself moved) at `<recovery_dir>/<guest path>.<UTC time>` (the guest path
begins with the VM's name), or at `<recovery_dir>/<vm>/<name cut to 100 bytes>-<hash>.<UTC time>` when that does
not fit (a 255-byte name plus the stamp, a path past the local PATH_MAX). The directory is 0700 and each file 0600:
they are guest files (an edited /etc/shadow, say), for the mount's user only, as the spool files they come from.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path


def keep(recovery_dir: Path, path: str, src: str | os.PathLike, move: bool = False) -> Path:
    """Keep `src` (bytes meant for the mount path `path`) in `recovery_dir`; returns where. OSError when it cannot;
    `src` is then left as it was."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    recovery_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):  # never a name that leads out of the recovery directory
        parts = ["unknown-path", path.replace("/", "_").lstrip(".") or "unnamed"]
    dest = recovery_dir.joinpath(*parts[:-1], f"{parts[-1]}.{stamp}")
    try:
        return _put(Path(src), dest, move)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
    base = os.fsencode(parts[-1])[:100].decode("utf-8", "ignore")
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    return _put(Path(src), recovery_dir / parts[0] / f"{base}-{digest}.{stamp}", move)


def _put(src: Path, dest: Path, move: bool) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.link(src, dest)  # unlike rename, never replaces a file already there
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
        else:
            os.chmod(dest, 0o600)
            os.unlink(src)
            return dest
    # shutil.copyfile alone would leave the mode to the umask
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        shutil.copyfile(src, dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if move:
        os.unlink(src)
    return dest
