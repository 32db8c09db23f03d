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
from sim import backend

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
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


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_runs_on_the_simulator(path, tmp_path):
    # Prepare
    scenario = load_scenario(path)
    chosen = policy(scenario)
    # Execute
    with TraceWriter(tmp_path, "sim", scenario.method.name) as writer:
        trace = backend.run(scenario, chosen, writer)
    # Assert: every request finished, every op recorded, the same on disk.
    assert len(trace.requests) == scenario.workload.requests
    plans = {s.plan.method for s in chosen.served()}
    assert {r.method for r in trace.requests} <= plans | {scenario.method.name}
    assert all(r.finish >= r.arrival for r in trace.requests)
    on_disk = read_trace_dir(tmp_path)
    assert len(on_disk.ops) == len(trace.ops) and len(on_disk.requests) == len(trace.requests)
    report = summarise(trace)
    assert report["latency_s"]["mean"] > 0


def test_there_are_scenarios():
    assert any(p.stem == "default" for p in SCENARIOS)
