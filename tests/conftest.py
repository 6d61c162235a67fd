import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the long load and soak tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("GUESTFS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long run: enable with --run-slow or GUESTFS_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def python_exe():
    """The interpreter running the tests; child processes use it so they see the same installed packages."""
    return sys.executable


@pytest.fixture
def sim(tmp_path):
    """A running vCenter simulator with two VMs, `alpha` and `beta` (log in tmp_path/sim.log)."""
    from tests.helpers.simulator import running_simulator

    root = tmp_path / "vms"
    for name in ("alpha", "beta"):
        (root / name).mkdir(parents=True)
    with running_simulator(root, log_path=tmp_path / "sim.log") as simulator:
        yield simulator


@pytest.fixture
def state_home(monkeypatch):
    """A short XDG_STATE_HOME for a mount and the commands that talk to it (`status`, `refresh`) alike: a unix
    socket path has ~107 bytes, more than pytest's tmp_path leaves."""
    path = Path(tempfile.mkdtemp(prefix="gfs-st-", dir="/tmp"))
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait(timeout=10)
    return p.pid
