"""The process tree under a process: what labs and emulator checks stop or count."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from halp.processes import descendants


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
