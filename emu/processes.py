"""Processes an emulated run starts inside Mininet nodes, and how it stops them.

Everything here is about process lifetime, not about what the processes compute: a run
(`emu.backend`) and the profiler in a CPU-limited host (`emu.profile`) both start `halp`
commands in nodes and must stop exactly those, by their process group, on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from halp.runtime.device import IO_CGROUP_FD_ENV

STOP_GRACE_S = 3.0


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks run."""


# ---- processes started inside nodes -------------------------------------------------------
class Started:
    """A process this run started inside a node; stopped by its process group id (mnexec -d
    makes it a session leader, so the group holds it and whatever it spawns)."""

    def __init__(self, device: str, role: str, popen: subprocess.Popen, log_path: Path | None):
        self.device = device
        self.role = role
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.log_text().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5.0)
        # Anything the process left in its group (it should have none).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for stream in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Processes:
    """The processes of one run; `stop_all` stops each by pid, hosts first."""

    def __init__(self) -> None:
        self.started: list[Started] = []

    def add(self, started: Started) -> Started:
        self.started.append(started)
        return started

    def stop_all(self) -> None:
        for p in sorted(self.started, key=lambda s: s.role != "host"):
            p.stop()

    def workers(self) -> list[Started]:
        return [p for p in self.started if p.role == "worker"]


def python_command(*args: str) -> list[str]:
    """This interpreter running the `halp` command (the venv's, which sees the project)."""
    return [sys.executable, "-m", "halp.cli", *args]


def child_env(threads: int, io_tasks_fd: int | None = None) -> dict[str, str]:
    """The environment of an emulated device's process; with `io_tasks_fd` (an open `tasks`
    file of an unlimited cgroup, passed to the child), its I/O threads leave its CPU quota
    (`halp.runtime.device.io_priority`)."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads)})
    env.pop(IO_CGROUP_FD_ENV, None)
    if io_tasks_fd is not None:
        env[IO_CGROUP_FD_ENV] = str(io_tasks_fd)
    return env


def listening(pid: int, ip: str, port: int) -> bool:
    """Is a TCP socket of `ip:port` in LISTEN state in the network namespace of `pid`?"""
    want_port = f"{port:04X}"
    want_ips = {_hex_ip(ip), "00000000"}
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            local_ip, local_port = fields[1].split(":")
            if local_port == want_port and local_ip in want_ips:
                return True
    return False


def _hex_ip(ip: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def new_tag() -> str:
    """Five characters that make this run's interface and cgroup names unique."""
    return "e" + secrets.token_hex(2)
