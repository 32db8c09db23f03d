"""Faults on the hardware lab: each ends the run with one line naming the device and what
happened, in bounded time, with the finished requests on disk and nothing left running on any
device: an unreachable device, one that never answers, a refused key, an unknown host key, a
worker that dies, a secondary or the host that reboots mid-run, and SIGTERM to `halp run`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hw_support import (  # noqa: F401  (fixtures: hw_required, lab)
    free_port,
    hw_required,
    lab_fixture,
    processes_mentioning,
)

from halp.errors import BackendError
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import TraceWriter, read_trace_dir
from hw.backend import HardwareBackend

pytestmark = [pytest.mark.hw, pytest.mark.usefixtures("hw_required")]

LONG = {"requests": 400, "interval": "40ms"}  # 16 s: long enough to be interrupted


def quiet(_line: str) -> None:
    pass


def run_lab(lab, text: str, out: Path) -> None:
    with TraceWriter(out, "hw", "halp") as writer:
        scenario = load_scenario(lab.write_scenario(text))
        HardwareBackend(log=quiet).run(scenario, policy_for(scenario), writer)


def assert_clean(lab) -> None:
    assert lab.leftovers() == []


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def remote_finished(lab) -> Callable[[], int]:
    """Requests the host device has finished in the run about to start (read on the device's
    own disk; a run folder left behind by a device that "rebooted" earlier does not count)."""
    before = set(lab.remote_dir.glob("runs/*-d0"))

    def count() -> int:
        return sum(lines(p / "out" / "requests.jsonl")
                   for p in set(lab.remote_dir.glob("runs/*-d0")) - before)
    return count


def when(condition: Callable[[], bool], action: Callable[[], None], timeout_s: float = 60.0):
    """Do `action` in a thread as soon as `condition()` holds; returns (thread, times)."""
    times: dict[str, float] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                times["at"] = time.monotonic()
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, times


def test_an_unreachable_device_is_named(lab, tmp_path):
    closed = free_port()
    text = lab.scenario_text(lines=[lab.device_line(0), lab.device_line(1, port=closed),
                                    lab.device_line(2)])
    began = time.monotonic()

    with pytest.raises(BackendError, match=rf"^cannot reach d1 at root@127\.0\.0\.2:{closed}: "
                                           "connection refused"):
        run_lab(lab, text, tmp_path / "out")

    assert time.monotonic() - began < 10
    assert_clean(lab)


def test_a_device_that_never_answers_times_out(lab, tmp_path):
    with socket.create_server(("127.0.0.2", 0)) as silent:  # accepts, never says a word
        port = silent.getsockname()[1]
        text = lab.scenario_text(timeout="3s", lines=[
            lab.device_line(0), lab.device_line(1, port=port), lab.device_line(2)])
        began = time.monotonic()

        with pytest.raises(BackendError, match=r"^cannot reach d1 at .*: no SSH answer within 3 s"):
            run_lab(lab, text, tmp_path / "out")

    assert time.monotonic() - began < 10
    assert_clean(lab)


def test_a_refused_key_is_named(lab, tmp_path):
    text = lab.scenario_text(lines=[lab.device_line(0), lab.device_line(1),
                                    lab.device_line(2, key=lab.bad_key)])

    with pytest.raises(BackendError, match=r"^d2 at root@127\.0\.0\.3:\d+ refused the SSH key "
                                           + str(lab.bad_key)):
        run_lab(lab, text, tmp_path / "out")

    assert_clean(lab)


def test_an_unknown_host_key_is_not_trusted(lab, tmp_path, monkeypatch):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("HALP_HW_KNOWN_HOSTS", str(empty))

    with pytest.raises(BackendError, match=r"^d0 at .*: its host key is not in .*ssh-keyscan"):
        run_lab(lab, lab.scenario_text(), tmp_path / "out")


def worker_pid(lab, device: str) -> int:
    for entry in processes_mentioning(str(lab.remote_dir)):
        pid, cmdline = entry.split(" ", 1)
        if " worker " in cmdline and f"--name {device}" in cmdline and "guard.py" not in cmdline:
            return int(pid)
    raise AssertionError(f"no worker of {device} running")


def test_a_worker_that_dies_ends_the_run_naming_it(lab, tmp_path):
    out = tmp_path / "out"
    finished = remote_finished(lab)
    thread, times = when(lambda: finished() >= 3,
                         lambda: os.kill(worker_pid(lab, "d2"), signal.SIGKILL))

    with pytest.raises(BackendError, match=r"^worker on d2 died mid-run \(killed by SIGKILL\); "
                                           "finished requests are in "):
        run_lab(lab, lab.scenario_text(**LONG), out)

    thread.join()
    assert time.monotonic() - times["at"] < 15  # bounded, far short of the 16 s run
    on_disk = read_trace_dir(out).requests
    assert 3 <= len(on_disk) < LONG["requests"]  # what finished stays on disk
    assert (out / "hw" / "d2.log").is_file()  # the logs came back from every device
    assert_clean(lab)


def test_a_secondary_that_reboots_mid_run_is_named(lab, tmp_path):
    out = tmp_path / "out"
    finished = remote_finished(lab)
    thread, times = when(lambda: finished() >= 3, lambda: lab.reboot(2, down_s=0.5))

    with pytest.raises(BackendError, match=r"^lost the SSH connection to d2 at root@127\.0\.0\.3"
                                           r":\d+ mid-run \(rebooted"):
        run_lab(lab, lab.scenario_text(**LONG), out)

    thread.join()
    assert time.monotonic() - times["at"] < 15
    assert len(read_trace_dir(out).requests) >= 3
    assert_clean(lab)


def test_a_host_that_reboots_keeps_the_finished_requests_here(lab, tmp_path):
    out = tmp_path / "out"
    # Crash the host once this machine holds a copy of three finished requests.
    thread, times = when(lambda: lines(out / "hw" / "host" / "requests.jsonl") >= 3,
                         lambda: lab.reboot(0, down_s=0.5))

    with pytest.raises(BackendError, match=r"^lost the SSH connection to d0 \(the host\)"):
        run_lab(lab, lab.scenario_text(**LONG), out)

    thread.join()
    assert time.monotonic() - times["at"] < 15
    assert len(read_trace_dir(out).requests) >= 3
    assert_clean(lab)  # the workers on d1 and d2 were stopped


def test_sigterm_stops_everything_the_run_started(lab, tmp_path):
    path = lab.write_scenario(lab.scenario_text(**LONG))
    out = tmp_path / "out"
    finished = remote_finished(lab)
    cli = subprocess.Popen([sys.executable, "-m", "halp.cli", "run", str(path), "--backend", "hw",
                            "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 60
        while finished() < 3 and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.05)
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()

    assert cli.returncode == 2
    assert "hardware run stopped by SIGTERM" in err.strip().splitlines()[-1]
    assert len(read_trace_dir(out).requests) >= 3
    assert_clean(lab)


def test_check_lists_what_is_wrong_with_each_device(lab):
    closed = free_port()
    path = lab.write_scenario(lab.scenario_text(lines=[
        lab.device_line(0, port=closed), lab.device_line(1), lab.device_line(2, key=lab.bad_key)]))

    result = subprocess.run([sys.executable, "-m", "halp.cli", "hw", "check", str(path)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    out = result.stdout
    assert f"d0: cannot reach d0 at root@127.0.0.1:{closed}: connection refused" in out
    assert "d1: no clock or bandwidth probe: the host is not reachable" in out
    assert f"d2: d2 at root@127.0.0.3:{lab.port} refused the SSH key {lab.bad_key}" in out
    assert out.splitlines()[-1] == "0 of 3 devices ready; look at d0, d1, d2"
    assert_clean(lab)
