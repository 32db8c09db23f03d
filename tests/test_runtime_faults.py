"""A worker killed mid-run: the host stops within a bounded time with a line naming the device,
and the requests that finished are on disk."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from runtime_support import endpoints, scenario_text, workers

from halp.errors import BackendError
from halp.runtime import load_token, run_host
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import REQUESTS_FILE, TraceWriter, read_trace_dir

EQUAL = "method: {name: equal, cuts: [0, 9, 27]}"
DETECT_BOUND_S = 5.0


@pytest.mark.parametrize("interval", ["100ms", "2ms"])  # one in flight at a time; a burst
def test_killed_worker_is_named_and_finished_requests_are_kept(tmp_path, interval):
    path = tmp_path / "s.yaml"
    path.write_text(scenario_text(requests=40, interval=interval, extra=EQUAL)
                    .replace("method: {name: halp}\n", ""))
    scenario = load_scenario(path)
    out = tmp_path / "out"
    with workers(tmp_path, ["w1", "w2"]) as (started, token_file):
        killed_at: list[float] = []

        def kill_after_two_requests() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                requests = out / REQUESTS_FILE
                if requests.is_file() and requests.read_text().count("\n") >= 2:
                    started[0].popen.send_signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_after_two_requests)
        killer.start()
        try:
            with pytest.raises(BackendError, match=r"device w1 \(tcp://127\.0\.0\.1:\d+\)") as info:
                with TraceWriter(out, "emu", "equal") as writer:
                    run_host(scenario, policy_for(scenario), writer, endpoints(started),
                             load_token(token_file), 30.0)
            stopped_at = time.monotonic()
        finally:
            killer.join()
        assert killed_at and stopped_at - killed_at[0] < DETECT_BOUND_S, str(info.value)
        assert "\n" not in str(info.value)
        finished = read_trace_dir(out)
        assert 2 <= len(finished.requests) < 40
        assert {q.request for q in finished.requests} == set(range(len(finished.requests)))
        assert started[1].popen.poll() is None  # the other worker keeps serving


def test_hung_worker_is_found_by_the_heartbeat(tmp_path):
    """A worker that hangs (SIGSTOP: its connections stay open)."""
    path = tmp_path / "s.yaml"
    path.write_text(scenario_text(devices=2, requests=40, interval="100ms", extra=EQUAL)
                    .replace("method: {name: halp}\n", "").replace("name: w1", "name: w2"))
    alone = load_scenario(path)
    with workers(tmp_path, ["w2"]) as (started, token_file):
        frozen: list[float] = []

        def freeze() -> None:
            time.sleep(1.0)
            started[0].popen.send_signal(signal.SIGSTOP)
            frozen.append(time.monotonic())

        freezer = threading.Thread(target=freeze)
        freezer.start()
        try:
            with pytest.raises(BackendError, match=r"device w2 .* sent nothing for") as info:
                run_host(alone, policy_for(alone), TraceWriter(None, "emu", "equal"),
                         {"w2": started[0].address}, load_token(token_file), 30.0,
                         dead_after_s=1.0)
            stopped_at = time.monotonic()
        finally:
            freezer.join()
            started[0].popen.send_signal(signal.SIGCONT)
        assert stopped_at - frozen[0] < 1.0 + DETECT_BOUND_S, str(info.value)
        assert started[0].stop() == 0
