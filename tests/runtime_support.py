"""Real workers for runtime tests: `halp worker` subprocesses on 127.0.0.1, stopped by pid."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from halp.methods.common import PlanBuilder
from halp.model.graph import ModelGraph
from halp.plan import Compute, Gather, Input, Plan, Transfer
from halp.runtime.auth import write_token
from halp.trace import Trace

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "this-machine.yaml"
START_TIMEOUT_S = 60.0


def whole_model_on(graph: ModelGraph, model: str, device: str, host: str = "h") -> Plan:
    """The host sends its input to `device`, which runs every layer and sends the output back."""
    b = PlanBuilder(graph, "test", model, host, [host, device])
    stop = len(graph)
    sent = b.transfer(host, device, 0, graph.full(0), [b.input()])
    out = b.compute(device, 0, stop, graph.full(stop), [sent])
    return b.build(b.transfer(device, host, stop, graph.full(stop), [out]))


def two_segments(graph: ModelGraph, model: str, cut: int, first: str, second: str,
                 host: str = "h") -> Plan:
    """`first` computes layers [0, cut), `second` the rest; the host holds input and output."""
    b = PlanBuilder(graph, "test", model, host, sorted({host, first, second}))
    block, where = b.input(), host
    for device, start, stop in ((first, 0, cut), (second, cut, len(graph))):
        if device != where:
            block = b.transfer(where, device, start, graph.full(start), [block])
        block, where = b.compute(device, start, stop, graph.full(stop), [block]), device
    if where != host:
        block = b.transfer(where, host, len(graph), graph.full(len(graph)), [block])
    return b.build(block)


def scenario_text(method: str = "halp", requests: int = 3, interval: str = "50ms",
                  devices: int = 3, extra: str = "") -> str:
    """A small MobileNet-V1 (0.25, 128) on a host and `devices - 1` secondaries w1, w2, ..."""
    lines = [f"  - {{name: h, role: host, profile: {PROFILE}}}"]
    lines += [f"  - {{name: w{i}, profile: {PROFILE}}}" for i in range(1, devices)]
    arrival = ("workload: {requests: 1, arrival: single}" if requests == 1 else
               f"workload: {{requests: {requests}, arrival: periodic, interval: {interval}}}")
    return "\n".join([
        "name: runtime-test", "seed: 3",
        "model: {name: mobilenet_v1, width: 0.25, resolution: 128}",
        "devices:", *lines,
        "network: {kind: star, bandwidth: 1Gbps}",
        f"method: {{name: {method}}}",
        arrival, extra, ""])


@dataclass
class WorkerProcess:
    name: str
    popen: subprocess.Popen
    address: str
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a grace period; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


def start_worker(tmp: Path, name: str, token_file: Path, *extra: str) -> WorkerProcess:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "halp.cli", "worker", "--listen", "tcp://127.0.0.1:0",
             "--token", str(token_file), *extra],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=tmp)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = out.read_text()
        if "listening on" in text:
            address = text.split("listening on ", 1)[1].split()[0]
            return WorkerProcess(name, popen, address, err)
        if popen.poll() is not None:
            raise RuntimeError(f"worker {name} exited: {err.read_text()}")
        time.sleep(0.05)
    popen.kill()
    popen.wait()
    raise RuntimeError(f"worker {name} did not start within {START_TIMEOUT_S} s")


@contextlib.contextmanager
def workers(tmp: Path, names: list[str]) -> Iterator[tuple[list[WorkerProcess], Path]]:
    """Start one worker per name (with --name); stop each by pid."""
    token_file = tmp / "token"
    if not token_file.exists():
        write_token(token_file)
    started: list[WorkerProcess] = []
    try:
        for name in names:
            started.append(start_worker(tmp, name, token_file, "--name", name))
        yield started, token_file
    finally:
        for w in started:
            w.stop()


def endpoints(started: list[WorkerProcess]) -> dict[str, str]:
    return {w.name: w.address for w in started}


def check_trace(trace: Trace, plan: Plan, requests: int) -> None:
    """Every op of every request is recorded once, with causal times and the plan's bytes."""
    assert len(trace.requests) == requests
    by_key = trace.by_key()
    assert len(by_key) == len(trace.ops) == requests * len(plan.ops)
    for q in trace.requests:
        ends: dict[str, float] = {}
        for op in plan.ops:
            r = by_key[(q.request, op.id)]
            assert r.kind == op.kind
            assert r.end >= r.start
            for i in op.inputs:
                assert r.start >= ends[i] - r.uncertainty_s, (q.request, op.id, i)
            ends[op.id] = r.end
            if isinstance(op, Transfer):
                assert r.bytes == op.bytes and r.device == op.src
                assert r.resource == f"{op.src}->{op.dst}"
            elif isinstance(op, Compute | Gather | Input):
                assert r.device == op.device == r.resource
        assert q.finish >= q.arrival
        assert abs(q.finish - ends[plan.output]) < 1e-9
        assert q.max_abs_error is not None and q.extra["relative_error"] <= 1e-4
