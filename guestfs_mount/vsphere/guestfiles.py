"""`GuestFiles`: the one interface the FUSE side uses, whatever the API dialect behind it.

Every method is a trio-compatible coroutine. `vm` is a VM id (`VMInfo.id`); `path` is a guest-native absolute
path (`/etc/hosts`, `C:\\Windows\\win.ini`); `creds` is the guest login the caller chose for that VM. Failures
raise the `faults.VSphereError` hierarchy; `.errno` says what a filesystem should return.
"""

from __future__ import annotations

import abc
import contextvars
import errno
import os
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, BinaryIO, Callable, Iterator, Literal, Protocol

from guestfs_mount.vsphere.faults import GuestFileError
from guestfs_mount.vsphere.model import (FileAttributes, GuestCredentials, GuestFileInfo, GuestProcess, GuestProgram,
                                       VMInfo)

Dialect = Literal["vi-json", "soap", "rest"]


@dataclass(frozen=True)
class ClientConfig:
    """How to reach one vCenter. The password is a value here, never a command-line argument."""

    url: str  # https://vcenter.example.com (http:// only for the simulator)
    username: str
    password: str
    api: Literal["auto", "vi-json", "soap", "rest"] = "auto"
    ca_file: str | None = None  # trust these CAs for vCenter instead of the system store
    insecure: bool = False  # no TLS verification at all (logged loudly)
    thumbprint: str | None = None  # SHA-256 "AB:CD:..." of vCenter's own certificate: accept exactly that one
    timeout: float = 30.0  # seconds for one API call; transfers use it as the idle timeout between bytes
    connect_timeout: float = 10.0
    max_guest_calls_per_vm: int = 4  # concurrent guest operations per VM (guest logins are expensive)
    retries: int = 5  # for TaskInProgress, TooManyGuestLogons, GuestOperationsUnavailable
    list_page_size: int = 500  # entries per ListFilesInGuest / files?action=list call
    # where transfers go when a URL names an ESXi host: its one management IP when the dialect can learn it (else
    # its name), the name as given, or vCenter's own address (an SNI-routing proxy); the pin stays on the host
    transfer_host: Literal["management-ip", "name", "vcenter"] = "management-ip"
    vm_names: tuple[str, ...] = ()  # the VMs the caller wants (--vm): inventories that refuse large lists ask by name


@dataclass(eq=False)
class Priority:
    """The class of the guest calls a task makes under `call_priority(...)`: background calls (a prefetch) take a
    VM's slot only when no interactive call waits for one, and leave slots free for interactive ones (flow.py).
    `promote()` makes them interactive from then on, also a call already waiting: a program now waits for it."""

    background: bool = True
    _waiting: set = field(default_factory=set, repr=False)

    def promote(self) -> None:
        self.background = False
        for waiter in list(self._waiting):
            waiter.event.set()


_PRIORITY: contextvars.ContextVar[Priority | None] = contextvars.ContextVar("guest_call_priority", default=None)


@contextmanager
def call_priority(priority: Priority | None) -> Iterator[None]:
    """Guest calls made in this block (and in tasks started from it) have this priority; None: interactive."""
    token = _PRIORITY.set(priority)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def current_priority() -> Priority | None:
    return _PRIORITY.get()


class Stopped(Exception):
    """A `Sink` wants no more bytes (the download was cancelled)."""


class Sink(Protocol):
    """Where `ReadTransfer.into` puts a body: buffers the transfer fills in place. Its methods may be called on a
    thread of the transfer's own."""

    def buffer(self) -> memoryview:
        """Writable space for the next bytes (never empty)."""

    def filled(self, n: int) -> None:
        """`n` bytes landed at the start of the last `buffer()`; raises Stopped to end the download."""


def put(sink: Sink, data) -> None:
    """Copy `data` into `sink` (bytes that were not read straight into its buffers)."""
    view = memoryview(data)
    while view:
        space = sink.buffer()
        n = min(len(space), len(view))
        space[:n] = view[:n]
        sink.filled(n)
        view = view[n:]


class ReadTransfer(abc.ABC):
    """A download in progress: the initiate call has been made, the GET has not necessarily started.

    `size` is the file's size (VI/JSON: from FileTransferInformation; REST: from the GET's Content-Length, so
    it may be None until `chunks()` has started). `info` is the file's record when the dialect returned one.
    `chunks()` (or `into()`) may be used once; it streams the body without holding it whole. Leaving the context (or
    `aclose()`) cancels an unfinished GET.
    """

    size: int | None
    info: GuestFileInfo | None

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[bytes]: ...

    async def into(self, sink: Sink) -> None:
        """The whole body into `sink`, instead of `chunks()` (one or the other, once); same errors. A transfer that
        can fills the sink's buffers off the event loop."""
        try:
            async for chunk in self.chunks():
                put(sink, chunk)
        except Stopped:
            pass

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> "ReadTransfer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class GuestFiles(abc.ABC):
    """Guest file operations on the VMs of one vCenter."""

    dialect: Dialect

    @abc.abstractmethod
    async def list_vms(self) -> list[VMInfo]:
        """Every VM, with power state, guest family and Tools readiness (one paged inventory query)."""

    @abc.abstractmethod
    def list_dir(self, vm: str, creds: GuestCredentials, path: str) -> AsyncIterator[GuestFileInfo]:
        """The entries of a directory, `.` and `..` dropped, fetched page by page as the caller iterates."""

    @abc.abstractmethod
    async def stat(self, vm: str, creds: GuestCredentials, path: str) -> GuestFileInfo:
        """One path's record (symlinks not followed)."""

    @abc.abstractmethod
    async def open_read(self, vm: str, creds: GuestCredentials, path: str) -> ReadTransfer:
        """Initiate a transfer from the guest. Use the result as an async context manager."""

    @abc.abstractmethod
    async def upload(
        self,
        vm: str,
        creds: GuestCredentials,
        path: str,
        source: str | os.PathLike | BinaryIO,
        size: int,
        attrs: FileAttributes | None = None,
        overwrite: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Initiate a transfer to the guest and PUT exactly `size` bytes from `source` (a path, or a binary file
        positioned at its start) with that Content-Length. `progress(n)` is called with bytes sent so far.
        A dead or spent URL is retried with a new initiate."""

    @abc.abstractmethod
    async def mkdir(self, vm: str, creds: GuestCredentials, path: str, parents: bool = False) -> None: ...

    @abc.abstractmethod
    async def remove_file(self, vm: str, creds: GuestCredentials, path: str) -> None: ...

    @abc.abstractmethod
    async def remove_dir(self, vm: str, creds: GuestCredentials, path: str, recursive: bool = False) -> None: ...

    @abc.abstractmethod
    async def move_file(self, vm: str, creds: GuestCredentials, src: str, dst: str, overwrite: bool = False) -> None: ...

    @abc.abstractmethod
    async def move_dir(self, vm: str, creds: GuestCredentials, src: str, dst: str) -> None: ...

    @abc.abstractmethod
    async def set_attributes(self, vm: str, creds: GuestCredentials, path: str, attrs: FileAttributes) -> None: ...

    @abc.abstractmethod
    async def make_temp(
        self,
        vm: str,
        creds: GuestCredentials,
        prefix: str = "",
        suffix: str = "",
        directory: str | None = None,
        is_dir: bool = False,
    ) -> str:
        """Create a temporary file (or directory) in the guest; returns its absolute path."""

    # Guest programs (GuestProcessManager; REST `guest/processes`, 7.0U2+). Two thin calls, one per API call, with no
    # policy: `guestprograms.py` builds the program, waits for its exit code and turns it into an errno. A dialect
    # that cannot run programs keeps these defaults (EOPNOTSUPP).

    async def start_program(self, vm: str, creds: GuestCredentials, program: GuestProgram) -> int:
        """Start `program` in the guest as the user of `creds` and return its pid at once, without waiting for it
        (VI: StartProgramInGuest with a GuestProgramSpec {programPath, arguments, workingDirectory, envVariables as
        "NAME=value"}, result the pid; REST: POST guest/processes?action=create, spec {path, arguments,
        working_directory, environment_variables as a map}, 201 with the pid). Needs the vCenter privilege
        VirtualMachine.GuestOperations.Execute (else NoPermission / 403 UNAUTHORIZED, EACCES). A program path that does
        not exist in the guest is FileNotFound / 404 (ENOENT: the program's, not any file the program was to make).
        Counted and limited as a guest call of `vm`; busy guests are retried as for file calls."""
        raise GuestFileError(f"the {self.dialect} dialect cannot run guest programs", errno=errno.EOPNOTSUPP, vm=vm)

    async def list_processes(self, vm: str, creds: GuestCredentials, pids: list[int]) -> list[GuestProcess]:
        """The guest agent's record of the processes `pids` (VI: ListProcessesInGuest with `pids`; REST: one
        POST guest/processes/{pid}?action=get per pid). A pid the agent does not know (never started, ended more
        than 5 minutes ago, Tools restarted) is absent from the result, not an error. Needs
        VirtualMachine.GuestOperations.Query."""
        raise GuestFileError(f"the {self.dialect} dialect cannot run guest programs", errno=errno.EOPNOTSUPP, vm=vm)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Log out and close connections."""

    async def __aenter__(self) -> "GuestFiles":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def open_client(config: ClientConfig) -> AbstractAsyncContextManager[GuestFiles]:
    """Connect and log in, picking the dialect when `config.api` is "auto" (VI/JSON when `/sdk/vim25/...`
    answers, else SOAP when `/sdk` does, else REST); logs out on exit. Implemented in `guestfs_mount.vsphere.connect`."""
    from guestfs_mount.vsphere.connect import connect

    return connect(config)
