"""Running a program in a guest, whatever the dialect: start it (`GuestFiles.start_program`), learn that it is done,
and turn a failure into the errno a filesystem should return. Also the only programs the mount runs: `ln -s`, `ln`,
`touch -h` and `chown -h`, for what the guest file API cannot do (symlinks, hard links, a symlink's own times and
owner).

No shell ever parses a name. On Linux the agent runs `bash -c '"<path>" <arguments>'`, so the arguments string is
shell text in the guest: it holds only the fixed words `"$GUESTFS_ARG1" "$GUESTFS_ARG2" ...`, and the words
themselves travel in the program's environment, which the agent hands to the program as it is. The shell expands a
double-quoted `"$NAME"` to exactly its value: no splitting, globbing, command substitution or further expansion,
whatever the value holds (spaces, quotes, `$`, backquotes, newlines, a leading `-`).

Learning that a program is done: the agent notices a program's end on a one-second timer, so its exit code comes a
second after the start at best. The effect of `ln` is visible sooner: right after the start the new path is
stat'ed, and when it already shows the link that was asked for, the exit code is not waited for. Otherwise, and
always for `touch -h`, ListProcessesInGuest is asked with backoff until the program has ended or `timeout` passes:
a link's own times cannot be seen through the guest file API at all (the agent stats through a link and reports
its target's mode, owner and times; open-vm-tools vixTools.c), so only the exit code tells that they were set.

An exit code says no errno (`ln` exits 1 whatever failed). After a failure the paths involved are stat'ed: the new
name exists -> EEXIST; its directory is missing -> ENOENT, is not a directory -> ENOTDIR; a hard link's source is
missing -> ENOENT, a directory -> EPERM; anything else (permissions, a read-only file system) -> EACCES, or EPERM
for the times of a link one does not own. The log line names the program and its exit code.
"""

from __future__ import annotations

import errno
import logging
import posixpath
from typing import Awaitable, Callable, Sequence, TypeVar

import trio

from guestfs_mount.vsphere.faults import GuestFileError, GuestLoginError, VSphereError
from guestfs_mount.vsphere.guestfiles import GuestFiles
from guestfs_mount.vsphere.model import FileType, GuestCredentials, GuestFileInfo, GuestProgram

log = logging.getLogger(__name__)
T = TypeVar("T")

LN = "/bin/ln"
TOUCH = "/bin/touch"
CHOWN = "/bin/chown"
ARG_VAR = "GUESTFS_ARG"
FIRST_POLL = 0.2  # seconds before the first ListProcessesInGuest; then doubling
MAX_POLL = 1.0  # the agent's own timer ticks once a second: polling faster than that gains nothing
DEFAULT_TIMEOUT = 30.0


class ProgramNotStarted(GuestFileError):
    """The guest would not start the program: it does not exist there, may not be run by this login, guest programs
    are disabled, or vCenter denies the privilege VirtualMachine.GuestOperations.Execute."""


def program(path: str, argv: Sequence[str]) -> GuestProgram:
    """The program `path` with the words `argv`, passed so that no shell parses them (see the module's docstring).
    A word no environment can carry (a NUL) is EINVAL; so is one a shell from before 2014 (CVE-2014-6271) would run
    as a function definition when it reads its environment."""
    env = {}
    for i, word in enumerate(argv, 1):
        if "\0" in word or word.startswith("() {"):
            raise GuestFileError(f"{word!r} cannot be passed to a guest program", errno=errno.EINVAL)
        env[f"{ARG_VAR}{i}"] = word
    arguments = " ".join(f'"${ARG_VAR}{i}"' for i in range(1, len(argv) + 1))
    return GuestProgram(path=path, arguments=arguments, env=env, working_directory="/")


async def start(client: GuestFiles, vm: str, creds: GuestCredentials, prog: GuestProgram) -> int:
    """Start `prog`; a guest that will not is `ProgramNotStarted` (a FileNotFound here is the program's own path,
    never the file the program was to make: EPERM, "this guest cannot do it", not ENOENT)."""
    try:
        return await client.start_program(vm, creds, prog)
    except GuestFileError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EOPNOTSUPP):
            raise ProgramNotStarted(f"{prog.path} cannot be run in the guest: {e}", errno=errno.EPERM,
                                    fault=e.fault, path=prog.path, vm=vm) from None
        if e.errno == errno.EACCES and not isinstance(e, GuestLoginError):
            raise ProgramNotStarted(f"{prog.path} may not be run in the guest: {e}", errno=errno.EACCES,
                                    fault=e.fault, path=prog.path, vm=vm) from None
        raise


async def exit_code(client: GuestFiles, vm: str, creds: GuestCredentials, pid: int, what: str,
                    timeout: float = DEFAULT_TIMEOUT) -> int:
    """Wait for the program `pid` to end (ListProcessesInGuest with backoff); its exit code. ETIMEDOUT after
    `timeout` seconds; EIO when the agent has no record of it (Tools restarted)."""
    delay = FIRST_POLL
    with trio.move_on_after(timeout):
        while True:
            await trio.sleep(delay)
            delay = min(delay * 2, MAX_POLL)
            found = [p for p in await client.list_processes(vm, creds, [pid]) if p.pid == pid]
            if not found:
                raise GuestFileError(f"{what}: the guest has no record of its process {pid}", errno=errno.EIO, vm=vm)
            if found[0].finished:
                return found[0].exit_code if found[0].exit_code is not None else -1
    raise GuestFileError(f"{what}: still running after {timeout:g} s (process {pid})", errno=errno.ETIMEDOUT, vm=vm)


async def _run(client: GuestFiles, vm: str, creds: GuestCredentials, prog: GuestProgram, what: str,
               done: Callable[[], Awaitable[T | None]], timeout: float) -> tuple[int, T | None]:
    """Start `prog`; (0, result) as soon as `done()` sees its effect, else (exit code, `done()` after it ended)."""
    pid = await start(client, vm, creds, prog)
    result = await done()
    if result is not None:
        return 0, result
    code = await exit_code(client, vm, creds, pid, what, timeout)
    return code, (await done() if code == 0 else None)


async def _stat(client: GuestFiles, vm: str, creds: GuestCredentials, path: str) -> GuestFileInfo | None:
    """A path's record, None when it does not exist (or its directory does not)."""
    try:
        return await client.stat(vm, creds, path)
    except VSphereError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


async def _directory_errno(client: GuestFiles, vm: str, creds: GuestCredentials, path: str) -> int | None:
    """Why a name cannot be made at `path` because of its directory: ENOENT, ENOTDIR, or None (it is fine)."""
    try:
        parent = await client.stat(vm, creds, posixpath.dirname(path) or "/")
    except VSphereError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return e.errno
        raise
    return None if parent.type is FileType.DIRECTORY else errno.ENOTDIR


def _failed(what: str, code: int, err: int, vm: str, path: str) -> GuestFileError:
    log.info("%s in VM %s exited with %d: %s", what, vm, code, errno.errorcode.get(err, err))
    return GuestFileError(f"{what} exited with {code}", errno=err, fault=f"exit {code}", path=path, vm=vm)


async def make_symlink(client: GuestFiles, vm: str, creds: GuestCredentials, target: str, path: str,
                       timeout: float = DEFAULT_TIMEOUT) -> GuestFileInfo:
    """`ln -s -- TARGET PATH` in a Linux guest; the new link's record."""
    what = f"ln -s of {path}"
    if target == "":
        raise GuestFileError(f"{what}: an empty target", errno=errno.ENOENT, path=path, vm=vm)  # as symlink(2)

    async def made() -> GuestFileInfo | None:
        info = await _stat(client, vm, creds, path)
        if info is None or info.type is not FileType.SYMLINK:
            return None
        return info if info.symlink_target in (None, target) else None

    code, info = await _run(client, vm, creds, program(LN, ["-s", "--", target, path]), what, made, timeout)
    if info is not None:
        return info
    if code == 0:
        # ln made the link inside a directory that appeared at PATH meanwhile (ln's rule for an existing directory)
        raise _failed(what, code, errno.EEXIST, vm, path)
    if await _stat(client, vm, creds, path) is not None:
        raise _failed(what, code, errno.EEXIST, vm, path)
    raise _failed(what, code, await _directory_errno(client, vm, creds, path) or errno.EACCES, vm, path)


async def make_hardlink(client: GuestFiles, vm: str, creds: GuestCredentials, old: str, new: str,
                        timeout: float = DEFAULT_TIMEOUT) -> GuestFileInfo:
    """`ln -- OLD NEW` in a Linux guest; the new name's record."""
    what = f"ln of {old} to {new}"

    async def made() -> GuestFileInfo | None:
        return await _stat(client, vm, creds, new)

    code, info = await _run(client, vm, creds, program(LN, ["--", old, new]), what, made, timeout)
    if info is not None and info.type is not FileType.DIRECTORY:
        return info
    if info is not None or await _stat(client, vm, creds, new) is not None:
        raise _failed(what, code, errno.EEXIST, vm, new)
    source = await _stat(client, vm, creds, old)
    if source is None:
        raise _failed(what, code, errno.ENOENT, vm, old)
    if source.type is FileType.DIRECTORY:
        raise _failed(what, code, errno.EPERM, vm, old)  # link(2) of a directory
    raise _failed(what, code, await _directory_errno(client, vm, creds, new) or errno.EACCES, vm, new)


async def _run_checked(client: GuestFiles, vm: str, creds: GuestCredentials, prog: GuestProgram, what: str,
                       path: str, timeout: float) -> None:
    """Run a program whose effect no stat can show (a symlink's own times or owner: the guest reports the
    target's); done when it exits with 0. After a failure the link is stat'ed to tell ENOENT from EPERM."""
    pid = await start(client, vm, creds, prog)
    code = await exit_code(client, vm, creds, pid, what, timeout)
    if code != 0:
        exists = await _stat(client, vm, creds, path) is not None
        raise _failed(what, code, errno.EPERM if exists else errno.ENOENT, vm, path)


async def set_symlink_owner(client: GuestFiles, vm: str, creds: GuestCredentials, path: str, uid: int | None,
                            gid: int | None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """The owner of the symlink `path` itself (`chown -h UID:GID`, numeric ids; ChangeFileAttributesInGuest
    would change its target's)."""
    spec = f"{'' if uid is None else int(uid)}{'' if gid is None else f':{int(gid)}'}"
    if not spec:
        return
    await _run_checked(client, vm, creds, program(CHOWN, ["-h", "--", spec, path]), f"chown -h of {path}", path,
                       timeout)


async def set_symlink_times(client: GuestFiles, vm: str, creds: GuestCredentials, path: str,
                            mtime: float | None, atime: float | None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """The times of the symlink `path` itself (`touch -h`; ChangeFileAttributesInGuest would set its target's):
    one run when both are given and equal, else one per time given. Set when each run exits with 0: no stat can
    tell (the guest reports the target's times), so none is made unless a run failed (to tell ENOENT from EPERM)."""
    runs = []
    if mtime is not None and atime is not None and int(mtime) == int(atime):
        runs.append(("", int(mtime)))
    else:
        runs += [("-m", int(mtime))] if mtime is not None else []
        runs += [("-a", int(atime))] if atime is not None else []
    for flag, when in runs:
        argv = ["-h", *([flag] if flag else []), "-d", f"@{when}", "--", path]
        await _run_checked(client, vm, creds, program(TOUCH, argv), f"touch -h of {path}", path, timeout)
