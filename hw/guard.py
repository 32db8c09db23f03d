"""The guard: the process the controller starts on a device, which starts and owns one command.

    python guard.py --log FILE -- COMMAND [ARG ...]

It runs on the device under the SSH session that started it, with the standard library only
(it is copied into each run's folder, so a device runs the guard of the controller that started
it, whatever wheel it has installed). It

- starts COMMAND as the leader of a new session (so its process group holds it and anything it
  spawns), with stdout and stderr merged, and prints `halp-guard pid=G child=C` first;
- copies every line the command prints to its own stdout (the controller reads it over SSH) and
  to the log file (which outlives the SSH channel);
- stops the command's process group (SIGTERM, then SIGKILL after `--grace` seconds) when its own
  stdin reaches end of file: that is how the controller says "stop", and also what happens when
  the SSH connection drops or the controller dies, so nothing outlives its controller; the same
  on SIGTERM, SIGINT or SIGHUP;
- exits when the command exits, with its status (128 + N after signal N), after a last line
  `halp-guard exit=STATUS`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

PREFIX = "halp-guard"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guard.py")
    parser.add_argument("--log", required=True, help="file that receives the command's output")
    parser.add_argument("--grace", type=float, default=5.0, help="SIGTERM to SIGKILL, seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    log = open(args.log, "ab", buffering=0)
    out = sys.stdout.buffer
    lock = threading.Lock()

    def say(line: bytes) -> None:
        with lock:
            log.write(line)
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):  # the SSH channel is gone; the log still gets it
                pass

    stopping = threading.Event()
    children: list[subprocess.Popen] = []

    def stop() -> None:
        """SIGTERM to the command's group, SIGKILL after the grace period (never reaps it)."""
        if stopping.is_set() or not children:
            stopping.set()
            return
        stopping.set()
        pid = children[0].pid
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.grace
        while not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(pid, signal.SIGKILL)

    def on_signal(*_: object) -> None:
        threading.Thread(target=stop, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        say(f"{PREFIX} cannot start {command[0]}: {exc.strerror or exc}\n".encode())
        say(f"{PREFIX} exit=127\n".encode())
        return 127
    children.append(child)
    say(f"{PREFIX} pid={os.getpid()} child={child.pid}\n".encode())
    if stopping.is_set():  # a signal came while it started
        stopping.clear()
        on_signal()

    def watch_stdin() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    assert child.stdout is not None
    for line in iter(child.stdout.readline, b""):
        say(line)
    # Until it is reaped the exited leader holds its group id, so this reaches only its group.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    _signal_group(child.pid, signal.SIGKILL)  # anything left in the group (there should be none)
    code = child.wait()
    status = code if code >= 0 else 128 - code
    say(f"{PREFIX} exit={status}\n".encode())
    log.close()
    return status


def _exited(pid: int) -> bool:
    """Has the child exited? (Without reaping it: its pid keeps naming its group.)"""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
