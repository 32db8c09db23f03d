"""The processes under one process, as /proc tells them, and stopping them all.

A run stops only what it started, by process id: the test labs and the arm64 device stop a
daemon together with every session it spawned, and the emulator tests check that a run left
no process behind. They all need the same walk of the process tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def children() -> dict[int, list[int]]:
    """Every running process's children, by parent pid."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """The children of `pid`, theirs, and so on (not `pid` itself)."""
    tree, out, todo = children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def signal_tree(pid: int, sig: int) -> list[int]:
    """Send `sig` to `pid` and everything under it (found first, so that children a dying parent
    leaves behind are signalled too); the pids it was sent to."""
    pids = [pid, *descendants(pid)]
    for each in pids:
        try:
            os.kill(each, sig)
        except ProcessLookupError:
            pass  # gone meanwhile
    return pids


def stop_tree(popen: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process we started and everything under it: SIGTERM, then SIGKILL after
    `grace_s`."""
    signal_tree(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=grace_s)
