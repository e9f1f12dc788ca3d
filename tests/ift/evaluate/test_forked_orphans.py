"""An evaluation's forked child dies with its parent (issue #20, item 9): SIGKILL only the parent while the child
is blocked writing to the pipe (the parent no longer reads), and the child must be gone within seconds; it used to
block forever. Both ways out are checked: the parent-death signal, and without it the broken pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PARENT = r"""
import os, sys, time
import ift.evaluate.forked as forked

if sys.argv[2] == "pipe only":
    forked._die_with_parent = lambda: None  # leave the closed read end as the only way out

pid_file = sys.argv[1]

def values():
    with open(pid_file + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    while True:
        yield "x" * 100_000  # the parent reads one: the next fill the pipe and block the child

lane = forked.ForkedGenerator(values, name="lane")
lane.next()
print("reading no more", flush=True)
time.sleep(600)
"""


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie, i.e. exited), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("way_out", ["parent death signal", "pipe only"])
def test_the_forked_child_exits_when_its_parent_is_killed(tmp_path, way_out):
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file), way_out], env=env,
                              stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        assert parent.stdout.readline().strip() == "reading no more"
        child_pid = int(pid_file.read_text())
        time.sleep(0.5)  # the child fills the pipe and blocks in its write
        assert _state(child_pid) not in (None, "Z"), "the child should still be running, blocked"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _state(child_pid) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _state(child_pid) in (None, "Z"), f"the child {child_pid} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if child_pid is not None and _state(child_pid) not in (None, "Z"):
            os.kill(child_pid, signal.SIGKILL)  # do not leave it blocked forever
