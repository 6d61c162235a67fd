"""What `guestfs-mount check` found: one `Step` per thing it tried, in order, and how they print.

A step passed (`ok`), failed (`fail`: the exit code is 1), passed with something the admin should know (`warn`:
`insecure = true`, a certificate about to expire, a login table no running VM uses), or was not tried because what
it needs failed first (`skip`). Every failed step says what to do (`advice`) and, when vCenter said so, which
privileges the vCenter user lacks.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, TextIO

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
MARKS = {OK: "✓", FAIL: "✗", WARN: "!", SKIP: "-"}
ASCII_MARKS = {OK: "ok", FAIL: "FAIL", WARN: "warn", SKIP: "skip"}


@dataclass
class Step:
    id: str  # stable for scripts: url, tls, api, login, vcenter, vms, credentials, vm, guest-login, listing,
    #          esxi-host, download, upload, programs
    status: str
    text: str
    advice: str | None = None
    vm: str | None = None  # the VM's name, for the per-VM steps
    privileges: list[str] = field(default_factory=list)  # what vCenter says the user lacks
    details: dict = field(default_factory=dict)  # figures and names, for --json

    @property
    def title(self) -> str:
        name = {"url": "URL", "tls": "TLS", "api": "API", "vcenter": "vCenter", "vms": "VMs", "vm": "VM",
                "guest-login": "guest login", "esxi-host": "ESXi host", "programs": "guest programs"}.get(self.id, self.id)
        return f"{self.vm}: {name}" if self.vm else name


class Report:
    """The steps so far; `on_step` hears of each as it is added (the text output prints as it goes)."""

    def __init__(self, on_step: Callable[[Step], None] | None = None):
        self.steps: list[Step] = []
        self._on_step = on_step

    def add(self, step_id: str, status: str, text: str, advice: str | None = None, **kw) -> Step:
        step = Step(step_id, status, text, advice, **kw)
        self.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)
        return step

    def ok(self, step_id: str, text: str, **kw) -> Step:
        return self.add(step_id, OK, text, **kw)

    def fail(self, step_id: str, text: str, advice: str | None = None, **kw) -> Step:
        return self.add(step_id, FAIL, text, advice, **kw)

    def warn(self, step_id: str, text: str, advice: str | None = None, **kw) -> Step:
        return self.add(step_id, WARN, text, advice, **kw)

    def skip(self, step_id: str, why: str, **kw) -> Step:
        return self.add(step_id, SKIP, f"not tried: {why}", **kw)

    @property
    def passed(self) -> bool:
        return all(s.status != FAIL for s in self.steps)

    def summary(self) -> str:
        failed = sum(s.status == FAIL for s in self.steps)
        warned = sum(s.status == WARN for s in self.steps)
        done = sum(s.status != SKIP for s in self.steps)
        head = f"{failed} of {done} checks failed" if failed else f"all {done} checks passed"
        return head + (f", {warned} with a warning" if warned else "")

    def as_json(self, **top) -> dict:
        return {**top, "ok": self.passed, "steps": [asdict(s) for s in self.steps]}


def marks_for(stream: TextIO) -> dict[str, str]:
    """✓ ✗ where the terminal can show them, words where it cannot (a C locale)."""
    try:
        "".join(MARKS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS
    return MARKS


def printer(stream: TextIO = sys.stdout) -> Callable[[Step], None]:
    """Prints each step as one line, and its advice on the next."""
    marks = marks_for(stream)

    def show(step: Step) -> None:
        print(f"{marks[step.status]} {step.title}: {step.text}", file=stream, flush=True)
        if step.advice and step.status in (FAIL, WARN):
            print(f"    what to do: {step.advice}", file=stream, flush=True)

    return show
