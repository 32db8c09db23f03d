"""Every scenario in scenarios/ runs on the simulator, so no example rots."""

from __future__ import annotations

import pytest
from sim_cases import REPO

from halp.latency.model import LatencyModel
from halp.methods import Prepared, prepare
from halp.report import summarise
from halp.scenario import load_scenario
from halp.serving import StaticPolicy, policy_for
from halp.trace import TraceWriter, read_trace_dir
from sim.backend import BACKEND as simulator

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
# The longest to simulate (36 s: 200 requests, every one re-planned), in `make test-long` only;
# select-mobilenet-emu runs the same method in `make test`.
LONG = {"select-mobilenet"}
_MODELS: dict = {}


def policy(scenario):
    """The scenario's policy, each model built once for the whole module."""
    if scenario.method.name == "select":
        return policy_for(scenario)
    spec = scenario.model_spec()
    if spec not in _MODELS:
        _MODELS[spec] = prepare(scenario)
    base = _MODELS[spec]
    cluster = scenario.cluster()
    return StaticPolicy(scenario, Prepared(base.spec, base.model, base.graph, cluster,
                                           LatencyModel(cluster)))


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.long) if p.stem in LONG else p
                                  for p in SCENARIOS], ids=lambda p: p.stem)
def test_every_scenario_runs_on_the_simulator_and_records_every_request(path, tmp_path):
    # Prepare
    scenario = load_scenario(path)
    chosen = policy(scenario)
    # Execute
    with TraceWriter(tmp_path, "sim", scenario.method.name) as writer:
        trace = simulator.run(scenario, chosen, writer)
    # Assert: every request finished, every op recorded, the same on disk.
    assert len(trace.requests) == scenario.workload.requests
    plans = {s.plan.method for s in chosen.served()}
    assert {r.method for r in trace.requests} <= plans | {scenario.method.name}
    assert all(r.finish >= r.arrival for r in trace.requests)
    on_disk = read_trace_dir(tmp_path)
    assert len(on_disk.ops) == len(trace.ops) and len(on_disk.requests) == len(trace.requests)
    report = summarise(trace)
    assert report["latency_s"]["mean"] > 0


def test_the_default_scenario_is_among_those_run():
    assert any(p.stem == "default" for p in SCENARIOS)


def test_devices_timed_slower_run_the_same_plans_slower():
    # `halp validate --calibrate` simulates the devices at the speed probed now: the plans are
    # the policy's, only the compute takes longer; transfers are the links'.
    scenario = load_scenario(REPO / "scenarios" / "emu_vgg16_3dev.yaml")
    chosen = policy(scenario)
    slower = scenario.with_values({f"devices.{d.name}.speed": d.speed / 2
                                   for d in scenario.devices})

    as_profiled = simulator.run(scenario, chosen, TraceWriter(None, "sim", "halp"))
    halved = simulator.run(slower, chosen, TraceWriter(None, "sim", "halp"))

    def durations(trace, kind):
        return {(o.request, o.op): o.end - o.start for o in trace.ops if o.kind == kind}

    assert durations(halved, "compute").keys() == durations(as_profiled, "compute").keys()
    assert durations(halved, "transfer") == pytest.approx(durations(as_profiled, "transfer"))
    ratios = [durations(halved, "compute")[k] / v
              for k, v in durations(as_profiled, "compute").items() if v > 0]
    # Twice as long, and a little more where an op follows an idle spell: its burst at full
    # speed (share x period of CPU) now covers half the work.
    ratios.sort()
    assert ratios[0] > 2.0 - 1e-6 and ratios[len(ratios) // 2] < 2.1, ratios
