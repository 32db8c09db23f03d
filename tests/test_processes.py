"""The process tree under a process: what labs and emulator checks stop or count."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from halp.processes import descendants, stop_tree


def test_descendants_hold_children_and_grandchildren_but_not_the_process_itself():
    # A child that starts a grandchild, both sleeping until stopped.
    child = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                              "time.sleep(60)"])
    try:
        deadline = time.monotonic() + 20
        while len(descendants(child.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchildren = descendants(child.pid)
        mine = descendants(os.getpid())

        assert len(grandchildren) == 1
        assert child.pid in mine and grandchildren[0] in mine and os.getpid() not in mine
    finally:
        for pid in [*descendants(child.pid), child.pid]:
            os.kill(pid, 9)
        child.wait(timeout=10)


def test_stop_tree_ends_a_process_and_the_processes_it_started():
    child = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                              "time.sleep(60)"])
    deadline = time.monotonic() + 20
    while not descendants(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (grandchild,) = descendants(child.pid)

    stop_tree(child, grace_s=5)

    assert child.returncode is not None
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
        time.sleep(0.05)  # reparented to init, which reaps it
    state = Path(f"/proc/{grandchild}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"
