"""Plans run end to end on real `halp worker` processes: every op traced as the simulator traces
it, outputs equal to the monolithic model, and the same workers serve run after run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from itertools import pairwise

from runtime_support import check_trace, endpoints, scenario_text, workers

from halp.methods import prepare
from halp.methods.common import PlanBuilder
from halp.plan import Plan, validate
from halp.policy import Served
from halp.runtime import load_token, run_host
from halp.scenario import load_scenario
from halp.serving import FixedPolicy, policy_for
from halp.trace import TraceWriter, read_trace_dir

EQUAL = "method: {name: equal, cuts: [0, 9, 27]}"


def chain_plan(prepared) -> Plan:
    """Host -> w1 -> w2 -> host: the workers hand a whole map to each other directly."""
    graph = prepared.graph
    b = PlanBuilder(graph, "chain", prepared.spec.variant, "h", ["h", "w1", "w2"])
    source = b.input()
    t1 = b.transfer("h", "w1", 0, graph.full(0), [source])
    c1 = b.compute("w1", 0, 9, graph.full(9), [t1])
    t2 = b.transfer("w1", "w2", 9, graph.full(9), [c1])
    c2 = b.compute("w2", 9, 27, graph.rows(27, 0, 8), [t2])
    c3 = b.compute("w2", 9, 27, graph.rows(27, 8, graph.height(27)), [t2])
    t3 = b.transfer("w2", "h", 27, graph.rows(27, 0, 8), [c2])
    t4 = b.transfer("w2", "h", 27, graph.rows(27, 8, graph.height(27)), [c3])
    g = b.gather("h", 27, graph.full(27), [t3, t4])
    plan = b.build(b.host_tail(27, g))
    validate(plan, graph)
    return plan


class Switching:
    """Serves `first` to request 0 and `second`, which it never declared, to the others."""

    def __init__(self, first: Served, second: Served):
        self.first, self.second = first, second
        self.observed: list[int] = []  # how many transfers it had seen, per request

    def serve(self, request: int, now_s: float, observed: list) -> Served:
        self.observed.append(len(observed))
        return self.first if request == 0 else self.second

    def served(self) -> list[Served]:
        return [self.first]


def scenario(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_scenario(path)


def test_plans_run_exactly_on_workers_that_stay_up(tmp_path):
    from sim.backend import BACKEND as simulator

    equal = scenario(tmp_path, "equal", scenario_text(requests=3, extra=EQUAL)
                     .replace("method: {name: halp}\n", ""))
    modnn = scenario(tmp_path, "modnn", scenario_text("modnn", requests=2))
    with workers(tmp_path, ["w1", "w2"]) as (started, token_file):
        token = load_token(token_file)
        eps = endpoints(started)

        # HALP's segments with equal shares: scatter, overlap, gather, on three devices.
        policy = policy_for(equal)
        with TraceWriter(tmp_path / "equal", "emu", "equal") as writer:
            trace = run_host(equal, policy, writer, eps, token, 30.0, warmup_requests=1)
        # The executor's threads are gone (pyzmq keeps one daemon for zero-copy sends).
        assert [t.name for t in threading.enumerate() if not t.daemon] == ["MainThread"]
        assert not [t for t in threading.enumerate() if t.name.startswith("halp-")]
        plan = policy.served()[0].plan
        check_trace(trace, plan, 3)
        assert {r.device for r in trace.ops} == {"h", "w1", "w2"}
        simulated = simulator.run(equal, policy, TraceWriter(None, "sim", "equal")).by_key()
        assert set(simulated) == set(trace.by_key())
        for key, record in trace.by_key().items():
            twin = simulated[key]
            assert (record.kind, record.resource, record.device, record.bytes) == \
                (twin.kind, twin.resource, twin.device, twin.bytes)
        on_disk = read_trace_dir(tmp_path / "equal")
        assert len(on_disk.requests) == 3 and len(on_disk.ops) == len(trace.ops)
        clocks = trace.meta["clocks"]
        assert set(clocks) == {"w1", "w2"} and all(c["same_clock"] for c in clocks.values())
        assert all(abs(c["measured_offset_s"]) < 0.01 for c in clocks.values())
        resident = trace.meta["resident_bytes"]  # each device's process, after the last request
        assert set(resident) == {"h", "w1", "w2"}
        assert all(0 < r["rss"] <= r["peak"] for r in resident.values())

        # MoDNN: a scatter and a gather per layer.
        policy = policy_for(modnn)
        with TraceWriter(None, "emu", "modnn") as writer:
            trace = run_host(modnn, policy, writer, eps, token, 30.0)
        check_trace(trace, policy.served()[0].plan, 2)

        # Worker to worker: blocks go directly between secondaries, signed with their pair key.
        prepared = prepare(modnn)
        chain = chain_plan(prepared)
        with TraceWriter(None, "emu", "chain") as writer:
            trace = run_host(modnn, FixedPolicy(Served(chain, prepared)), writer, eps, token, 30.0)
        check_trace(trace, chain, 2)
        assert trace.by_key()[(0, "t3")].resource == "w1->w2"

        # A plan the policy did not declare goes to the workers before its request arrives.
        spaced = scenario(tmp_path, "spaced", scenario_text("modnn", requests=2, interval="1s"))
        switching = Switching(Served(policy.served()[0].plan, prepared), Served(chain, prepared))
        with TraceWriter(None, "emu", "switching") as writer:
            trace = run_host(spaced, switching, writer, eps, token, 30.0)
        late = trace.requests[1]
        assert late.extra["install_s"] > 0 and late.method == "chain"
        assert late.extra["queue_s"] < late.extra["install_s"]
        # ... and is decided knowing request 0's transfers, as at its arrival.
        transfers = sum(op.kind == "transfer" for op in policy.served()[0].plan.ops)
        assert switching.observed == [0, transfers]
        assert all(r.extra["relative_error"] <= 1e-4 for r in trace.requests)

        # The command the emulator runs in the host's node, with the plans it was given.
        (tmp_path / "endpoints.json").write_text(json.dumps(eps))
        (tmp_path / "plans.json").write_text(json.dumps([chain.to_dict()]))
        done = subprocess.run(
            [sys.executable, "-m", "halp.cli", "host", str(tmp_path / "modnn.yaml"),
             "--endpoints", str(tmp_path / "endpoints.json"), "--token", str(token_file),
             "--out", str(tmp_path / "cli"), "--plans", str(tmp_path / "plans.json"),
             "--warmup", "0"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "request 1 done in " in done.stdout and "2 requests" in done.stdout
        check_trace(read_trace_dir(tmp_path / "cli"), chain, 2)
        runtime = json.loads((tmp_path / "cli" / "runtime.json").read_text())
        assert runtime["clocks"]["w1"]["pid"] == started[0].pid
        assert runtime["resident_bytes"]["w1"]["rss"] > 0

        assert all(w.popen.poll() is None for w in started)  # still serving after four runs
        assert [w.stop() for w in started] == [0, 0]


def test_requests_that_arrive_together_are_in_flight_together(tmp_path):
    """A burst: each request enters at its arrival, not when the one before has finished, and
    every device still serves its ops request after request, as the simulator does."""
    from sim.backend import BACKEND as simulator

    one_segment = "method: {name: equal, cuts: [0, 27]}"  # scatter, compute, gather
    burst = scenario(tmp_path, "burst", scenario_text(requests=4, interval="1ms",
                                                      extra=one_segment)
                     .replace("method: {name: halp}\n", ""))
    policy = policy_for(burst)
    plan = policy.served()[0].plan
    with workers(tmp_path, ["w1", "w2"]) as (started, token_file):
        with TraceWriter(None, "emu", "burst") as writer:
            trace = run_host(burst, policy, writer, endpoints(started), load_token(token_file),
                             30.0, warmup_requests=1)
    check_trace(trace, plan, 4)
    by_key = trace.by_key()
    simulated = simulator.run(burst, policy, TraceWriter(None, "sim", "burst"))
    # Request 1's blocks leave the host, and are computed, while request 0 is still served.
    for run in (trace, simulated):
        finish = {q.request: q.finish for q in run.requests}
        first_send = min(r.start for r in run.ops if r.request == 1 and r.kind == "transfer")
        assert first_send < finish[0]
    assert all(q.extra["queue_s"] < 0.05 for q in trace.requests)  # dispatched on arrival
    simulated = simulated.by_key()

    # Per device, compute never overlaps and goes request after request; per pair of devices,
    # blocks leave in the simulator's order.
    def order(records, resource):
        return sorted((r for r in records.values() if r.resource == resource
                       and r.kind != "input"), key=lambda r: (r.start, r.end))

    for resource in {r.resource for r in trace.ops}:
        measured = order(by_key, resource)
        assert [(r.request, r.op) for r in measured] == \
            [(r.request, r.op) for r in order(simulated, resource)], resource
        if "->" not in resource:
            assert all(a.end <= b.start + 1e-6 for a, b in pairwise(measured))
            assert [r.request for r in measured] == sorted(r.request for r in measured)


class Deliberate(FixedPolicy):
    """Takes `think_s` to decide each request (a planner that searches per request)."""

    def __init__(self, answer: Served, think_s: float):
        super().__init__(answer)
        self.think_s = think_s

    def serve(self, request: int, now_s: float, observed: list) -> Served:
        time.sleep(self.think_s)
        return self.answer


def test_a_policy_decides_before_the_arrival_when_it_can_request_0_too(tmp_path):
    # Prepare: a policy that takes 150 ms per decision, requests 1 s apart (each done in far
    # less): every decision can be made while the cluster idles before the request arrives.
    spaced = scenario(tmp_path, "spaced", scenario_text(requests=3, interval="1s", extra=EQUAL)
                      .replace("method: {name: halp}\n", ""))
    policy = Deliberate(policy_for(spaced).served()[0], think_s=0.15)

    with workers(tmp_path, ["w1", "w2"]) as (started, token_file):
        with TraceWriter(None, "emu", "deliberate") as writer:
            trace = run_host(spaced, policy, writer, endpoints(started), load_token(token_file),
                             30.0)

    # Assert: no request waited for its decision, not even request 0, whose plan is chosen
    # before the run's time zero (as in the simulator, where deciding takes no time).
    assert [q.request for q in trace.requests] == [0, 1, 2]
    assert all(q.extra["policy_s"] >= 0.15 for q in trace.requests)
    assert all(q.extra["queue_s"] < 0.05 for q in trace.requests), \
        [q.extra["queue_s"] for q in trace.requests]
