"""For one request on constant bandwidth, the simulator's timeline equals the planners' quick
estimate (`halp.schedule.estimate`), op by op.

Where they may differ, by design: on a `shared` channel the simulator grants the channel first
come, first served, while `estimate` takes transfers in plan order; and a transfer between two
secondaries holds both star links in the simulator. With one secondary the channel has no
contention to order, so there they agree too. And a device profiled under a CPU quota runs
faster after idling in the simulator only (the last test).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_cases import METHODS, REPO, cluster, tiny_graph

from halp.latency.model import LatencyModel
from halp.methods import plan_for, prepare
from halp.scenario import load_scenario
from halp.schedule import estimate
from halp.serving import StaticPolicy
from sim.backend import simulate_trace

EXACT = 1e-9
GRAPH = tiny_graph(16)


def assert_conforms(c, graph, plan) -> None:
    trace = simulate_trace(c, graph, plan, [0.0])
    timing = estimate(plan, graph, LatencyModel(c))
    for r in trace.ops:
        assert r.start == pytest.approx(timing.start[r.op], abs=EXACT), f"{r.op} start"
        assert r.end == pytest.approx(timing.end[r.op], abs=EXACT), f"{r.op} end"
    assert trace.requests[0].latency == pytest.approx(timing.makespan, abs=EXACT)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("profiles")


@given(n=st.integers(2, 4), speeds=st.lists(st.sampled_from([0.5, 1.0, 3.0]), min_size=4, max_size=4),
       bandwidth=st.lists(st.sampled_from([0.3e6, 2e6, 40e6]), min_size=3, max_size=3),
       delay=st.sampled_from([0.0, 0.001]), method=st.sampled_from(METHODS))
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sim_equals_estimate_on_a_star(folder, n, speeds, bandwidth, delay, method):
    names = ["h", "a", "b", "c"][:n]
    c = cluster(folder, dict(zip(names, speeds, strict=False)),
                dict(zip(names[1:], bandwidth, strict=False)), delay_s=delay)
    assert_conforms(c, GRAPH, plan_for(method, GRAPH, c, LatencyModel(c), "tiny"))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_sim_equals_estimate_on_an_uncontended_shared_channel(tmp_path, method):
    c = cluster(tmp_path, {"h": 1.0, "a": 2.0}, 1e6, network="shared", delay_s=0.001)
    assert_conforms(c, GRAPH, plan_for(method, GRAPH, c, LatencyModel(c), "tiny"))


@pytest.fixture(scope="module")
def vgg16():
    scenario = load_scenario(REPO / "scenarios" / "default.yaml")
    return scenario, prepare(scenario)


@pytest.mark.parametrize("method", ["standalone", "equal", "modnn", "deepthings", "offload", "halp"])
def test_sim_equals_estimate_for_vgg16_on_three_devices(vgg16, method):
    scenario, prepared = vgg16
    plan = StaticPolicy(scenario.with_values({"method.name": method}), prepared).answer.plan
    assert_conforms(prepared.cluster, prepared.graph, plan)


def test_a_device_measured_under_a_quota_runs_faster_after_idling(folder):
    """Its profile's times are a throttled core's with ops back to back; after an idle spell
    the first share x period of CPU runs at full speed. Only a quota profile does this."""
    from dataclasses import replace

    from halp.scenario import StandaloneMethod
    from sim.engine import after_idle

    plain = cluster(folder, {"h": 1.0}, 1e6)
    device = plain.devices[0]
    quota = replace(device, profile=replace(device.profile,
                                            provenance={"cpu_share": 0.25, "cfs_period_us": 10_000}))
    limited = replace(plain, devices=(quota,))
    assert device.profile.cpu_quota is None and quota.profile.cpu_quota == (0.25, 0.01)
    plan = plan_for(StandaloneMethod(name="standalone"), GRAPH, plain, LatencyModel(plain), "tiny")
    timing = estimate(plan, GRAPH, LatencyModel(plain))
    profiled = {op: timing.end[op] - timing.start[op] for op in timing.end}
    for c in (plain, limited):
        ops = [r for r in simulate_trace(c, GRAPH, plan, [0.0, 0.0, 1.0]).ops if r.kind == "compute"]
        first = min(r.start for r in ops if r.request == 0)
        for r in ops:
            # Idle before the first op of requests 0 and 2; request 1 queues behind request 0.
            idle = c is limited and r.request in (0, 2) and r.start - first in (0.0, 1.0)
            want = after_idle(profiled[r.op], 1.0, 0.25, 0.01) if idle else profiled[r.op]
            assert r.duration == pytest.approx(want), (r.request, r.op)
    assert after_idle(0.02, 1.0, 0.25, 0.01) == pytest.approx(0.02 - 0.0025 * 3)
    assert after_idle(0.004, 1.0, 0.25, 0.01) == pytest.approx(0.001)  # all of it at full speed
    assert after_idle(0.02, 0.007, 0.25, 0.01) == 0.02  # too short an idle: no new quota yet
