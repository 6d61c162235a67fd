"""Guest programs, dialect-neutral: what the guest agent does for StartProgramInGuest and ListProcessesInGuest, over
a VM's directory. Nothing ever runs on the host.

The agent (open-vm-tools vixTools.c, procMgrPosix.c) checks that the program path exists, then runs
`bash -c '"<programPath>" <arguments>'` with `envVariables` as the whole environment (when given) in
`workingDirectory` (else the user's home), and returns the pid at once; the exit code and end time are kept for
ListProcessesInGuest. Here the command line is parsed as bash would, for a small grammar (words of plain
characters, '...' and "..." with $NAME / ${NAME} expansions), and anything outside it (unquoted $, ;, |, &, <, >,
backquotes, backslashes, globs, newlines, ...) ends the "process" with exit code 2 and runs nothing. Exactly these
programs exist: `/bin/ln` (`ln [-s] [--] TARGET LINK_NAME`, GNU semantics: an existing directory LINK_NAME gets the
link inside it), `/bin/touch` (`touch -h [-m|-a] -d @SECONDS [--] FILE`) and `/bin/chown` (`chown -h [--]
[UID][:GID] FILE`, numeric ids). Any other program path is the
FileNotFound fault a guest gives for a program it does not have. Programs end at once; failures exit 1, like the
real ones. Every program takes `--version` alone and exits 0, as GNU's do (the harmless run of `guestfs-mount check`).

Encodings (VI/JSON `viprocs.py`, REST `restprocs.py`, and any other) call `GuestPrograms.start` and `.processes`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
import threading
import time
from dataclasses import dataclass

from .faults import SimFault
from .guestfs import GuestFS

log = logging.getLogger("guestfs_mount.sim")

KEPT_FOR = 300.0  # seconds the agent keeps an ended program's exit code (the API reference: 5 minutes)
SYNTAX_ERROR = 2  # bash's exit code for a command line it cannot run


class Unsupported(Exception):
    """A command line outside the grammar the simulator parses: nothing runs."""


@dataclass
class Process:
    pid: int
    name: str
    owner: str
    cmd_line: str
    start_time: float
    end_time: float | None = None
    exit_code: int | None = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_IN_DOUBLE = re.compile(r'[^"$`\\!]+')


def shell_words(command: str, env: dict[str, str]) -> list[str]:
    """The words bash makes of `command`, for the grammar above; Unsupported for anything else."""
    words: list[str] = []
    i, n = 0, len(command)
    while i < n:
        if command[i] in " \t":
            i += 1
            continue
        word: list[str] = []
        while i < n and command[i] not in " \t":
            c = command[i]
            if c == "'":
                end = command.find("'", i + 1)
                if end < 0:
                    raise Unsupported("unterminated '")
                word.append(command[i + 1:end])
                i = end + 1
            elif c == '"':
                i += 1
                while True:
                    if i >= n:
                        raise Unsupported('unterminated "')
                    if command[i] == '"':
                        i += 1
                        break
                    if command[i] == "$":
                        i, value = _expansion(command, i, env)
                        word.append(value)
                        continue
                    m = _IN_DOUBLE.match(command, i)
                    if m is None:
                        raise Unsupported(f"{command[i]!r} inside double quotes")
                    word.append(m.group())
                    i = m.end()
            else:
                m = _PLAIN.match(command, i)
                if m is None:
                    raise Unsupported(f"{c!r} outside quotes")
                word.append(m.group())
                i = m.end()
        words.append("".join(word))
    return words


def _expansion(command: str, i: int, env: dict[str, str]) -> tuple[int, str]:
    """`$NAME` or `${NAME}` at `i` (inside double quotes): the new index and the value ("" when unset)."""
    braced = command.startswith("${", i)
    m = _NAME.match(command, i + (2 if braced else 1))
    if m is None or (braced and not command.startswith("}", m.end())):
        raise Unsupported("a $ that is not $NAME or ${NAME}")
    return m.end() + (1 if braced else 0), env.get(m.group(), "")


class GuestPrograms:
    """The programs started in every VM, by pid (pids are unique across VMs, as they need not be)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_pid = 4000
        self._processes: dict[str, dict[int, Process]] = {}  # VM name -> pid -> process

    def start(self, vm: str, fs: GuestFS, user: str, program_path: str, arguments: str | None,
              env: dict[str, str] | None, working_directory: str | None) -> int:
        """Start a program as the agent does; returns its pid (the program has ended when this returns)."""
        if not isinstance(program_path, str) or not program_path:
            raise SimFault("InvalidArgument", "programPath is required", invalidProperty="programPath")
        if fs.windows or program_path not in PROGRAMS:
            raise SimFault("FileNotFound", f"File {program_path} was not found", file=program_path)
        cwd = working_directory or ("/root" if user == "root" else f"/home/{user}")
        if working_directory and not os.path.isdir(fs.host_path(working_directory)):
            raise SimFault("NotADirectory", f"{working_directory} is not a directory", file=working_directory)
        cmd_line = f'"{program_path}" {arguments}' if arguments is not None else f'"{program_path}"'
        with self._lock:
            pid = self._next_pid
            self._next_pid += 1
        process = Process(pid, posixpath.basename(program_path), user, cmd_line, time.time())
        try:
            words = shell_words(cmd_line, env if env is not None else {"HOME": cwd, "PATH": "/usr/bin:/bin"})
            # `--version` alone: what GNU programs print and exit 0 for (a harmless run, `guestfs-mount check`)
            code = 0 if words[1:] == ["--version"] else PROGRAMS[program_path](_Guest(fs, cwd), words[1:])
        except Unsupported as e:
            log.warning("VM %s: process %d: command line not simulated (%s); nothing run", vm, pid, e)
            code = SYNTAX_ERROR
        process.end_time, process.exit_code = time.time(), code
        with self._lock:
            self._processes.setdefault(vm, {})[pid] = process
        return pid

    def processes(self, vm: str, pids: list[int] | None) -> list[Process]:
        """The VM's programs started here and still remembered (all of them, or those of `pids`)."""
        now = time.time()
        with self._lock:
            known = self._processes.get(vm, {})
            for pid in [p for p, proc in known.items() if proc.end_time and now - proc.end_time > KEPT_FOR]:
                del known[pid]
            return [known[p] for p in (pids if pids else list(known)) if p in known]


class _Guest:
    """Guest paths of one program run: relative ones from its working directory."""

    def __init__(self, fs: GuestFS, cwd: str):
        self.fs, self.cwd = fs, cwd

    def host(self, guest_path: str) -> str:
        return self.fs.host_path(posixpath.join(self.cwd, guest_path))

    def directory(self, guest_path: str) -> str | None:
        """The guest path of the directory `guest_path` is, its symlinks followed in the guest (an absolute target
        is the guest's path, never the host's: ln must not put a link into the host's /etc); None if it is none."""
        guest_path = posixpath.join(self.cwd, guest_path)
        for _ in range(40):  # the kernel's limit of links followed
            host = self.host(guest_path)
            if not os.path.islink(host):
                return guest_path if os.path.isdir(host) else None
            guest_path = posixpath.join(posixpath.dirname(guest_path), os.readlink(host))
        return None


def _fail(what: str, err: OSError | str) -> int:
    log.info("guest program: %s: %s", what, err.strerror if isinstance(err, OSError) else err)
    return 1


def _operands(args: list[str], flags: str, with_value: str = "") -> tuple[set[str], dict[str, str], list[str]] | None:
    """getopt: short options in `flags` (those in `with_value` take the next word), `--` ends them; None when an
    option is unknown."""
    seen, values = set(), {}
    while args and args[0].startswith("-") and args[0] != "-":
        word = args.pop(0)
        if word == "--":
            break
        letters = word[1:]
        while letters:
            flag, letters = letters[0], letters[1:]
            if flag in with_value:
                value = letters or (args.pop(0) if args else None)
                if value is None:
                    return None
                values[flag], letters = value, ""
            elif flag in flags:
                seen.add(flag)
            else:
                return None
    return seen, values, args


def _ln(guest: _Guest, args: list[str]) -> int:
    parsed = _operands(list(args), "s")
    if parsed is None or len(parsed[2]) != 2:
        return _fail("ln", f"arguments not simulated: {args!r}")
    flags, _, (source, name) = parsed
    directory = guest.directory(name)
    if directory is not None:  # GNU ln: LINK_NAME an existing directory (or a link to one) gets the link inside it
        name = posixpath.join(directory, posixpath.basename(source.rstrip("/")) or source)
    dest = guest.host(name)
    try:
        if "s" in flags:
            os.symlink(source, dest)
        else:
            src = guest.host(source)
            if stat.S_ISDIR(os.lstat(src).st_mode):
                return _fail("ln", f"{source}: hard link not allowed for directory")
            os.link(src, dest, follow_symlinks=False)
    except OSError as e:
        return _fail(f"ln {name}", e)
    return 0


def _touch(guest: _Guest, args: list[str]) -> int:
    parsed = _operands(list(args), "hma", with_value="d")
    if parsed is None or len(parsed[2]) != 1 or "h" not in parsed[0] or not re.fullmatch(r"@-?\d+", parsed[1].get("d", "")):
        return _fail("touch", f"arguments not simulated: {args!r}")
    flags, values, (name,) = parsed
    when = int(values["d"][1:])
    path = guest.host(name)
    try:
        st = os.lstat(path)
        atime = st.st_atime if "m" in flags and "a" not in flags else when
        mtime = st.st_mtime if "a" in flags and "m" not in flags else when
        os.utime(path, (atime, mtime), follow_symlinks=False)
    except OSError as e:
        return _fail(f"touch {name}", e)
    return 0


def _chown(guest: _Guest, args: list[str]) -> int:
    """`chown -h [--] [UID][:GID] FILE`, numeric ids only (what the mount sends); as the simulator's own user, so
    a change of owner needs root there, as it does in a guest."""
    parsed = _operands(list(args), "h")
    spec = parsed[2][0] if parsed is not None and len(parsed[2]) == 2 else ""
    owner = re.fullmatch(r"(\d*)(?::(\d+))?", spec)
    if parsed is None or "h" not in parsed[0] or owner is None or not any(owner.groups()):
        return _fail("chown", f"arguments not simulated: {args!r}")
    uid, gid = (int(x) if x else -1 for x in owner.groups())
    name = parsed[2][1]
    try:
        os.chown(guest.host(name), uid, gid, follow_symlinks=False)
    except OSError as e:
        return _fail(f"chown {name}", e)
    return 0


PROGRAMS = {"/bin/ln": _ln, "/bin/touch": _touch, "/bin/chown": _chown}
