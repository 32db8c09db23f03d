"""One contract over every backend: the same scenario and the same plans, run by the simulator,
the emulator (Mininet, root) and the hardware backend (sshd on loopback addresses, root). Every
trace keeps its plan's contract (`halp.conformance`: each op once, causality, one op at a time
per device, bytes conserved), and where tensors exist every output equals the whole model's."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import write_scenario
from hw_support import lab_fixture  # noqa: F401  (fixture: lab)

from halp.backends import load_backend
from halp.conformance import problems
from halp.plan import Compute, Transfer
from halp.runtime import TOLERANCE
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import TraceWriter

from emu_support import machine_state, require_emu  # noqa: F401  (fixture)

# MobileNet-V1 0.25 at 128 px (a chain) and ResNet-18 at 112 px (residual blocks, whose rows the
# plans share out: the emulator's and the hardware's outputs are exact over the wire): small
# enough for half a core. The host is planned slow so that HALP hands rows to the secondaries; two
# requests 20 ms apart are in flight together.
SCENARIO = """\
name: conformance
seed: 3
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: d0, role: host, profile: this-machine, cpu_share: 0.5, speed: 0.05}
  - {name: d1, profile: this-machine, cpu_share: 0.5}
  - {name: d2, profile: this-machine, cpu_share: 0.5}
network: {kind: star, bandwidth: 50Mbps}
method: {name: halp}
workload: {requests: 2, arrival: periodic, interval: 20ms}
backends: {emu: {timeout: 60s}, hw: {timeout: 60s}}
"""
METHODS = ["halp", "modnn"]
MODELS = {"mobilenet_v1": {}, "resnet18": {"model.name": "resnet18", "model.width": 1.0,
                                           "model.resolution": 112}}


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """The scenario per model and method, and the one policy (so the same plans) every
    backend runs."""
    base = load_scenario(write_scenario(tmp_path_factory.mktemp("conformance"), SCENARIO))
    out = {}
    for model, changes in MODELS.items():
        for method in METHODS:
            scenario = base.with_values({**changes, "method.name": method})
            out[model, method] = (scenario, policy_for(scenario))
    return out


def on_the_lab(scenario, lab):
    """The same devices, reached over SSH on the lab's loopback addresses."""
    changes = {"backends.hw.remote_dir": str(lab.remote_dir), "backends.hw.start_workers": True}
    for i, device in enumerate(scenario.devices):
        changes.update({f"devices.{device.name}.address": lab.addresses[i],
                        f"devices.{device.name}.port": 17400 + i,
                        f"devices.{device.name}.ssh_user": "root",
                        f"devices.{device.name}.ssh_key": str(lab.key),
                        f"devices.{device.name}.ssh_port": lab.port})
    return scenario.with_values(changes)


@pytest.fixture
def runnable(request):
    """The scenario as the backend under test runs it (skipped, or failed under
    HALP_REQUIRE_EMU=1, where that backend cannot run here)."""
    backend = request.node.callspec.params["backend"]
    if backend == "emu":
        require_emu()
        request.getfixturevalue("machine_state")  # and nothing left behind after the run
    if backend == "hw":
        lab = request.getfixturevalue("lab")
        return lambda scenario: on_the_lab(scenario, lab)
    return lambda scenario: scenario


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", [
    "sim",
    pytest.param("emu", marks=pytest.mark.emu),
    pytest.param("hw", marks=pytest.mark.hw),
])
def test_every_backend_runs_the_plans_it_is_given_and_keeps_their_contract(
        backend, method, model, policies, runnable, tmp_path):
    # Prepare: the plans are made once, here; the backend gets them through the policy.
    scenario, policy = policies[model, method]
    scenario = runnable(scenario)
    (plan,) = [s.plan for s in policy.served()]
    # Execute
    with TraceWriter(tmp_path / backend, backend, method) as writer:
        trace = load_backend(backend).run(scenario, policy, writer)
    # Assert: every request, every op of the plan once, causal, exclusive, bytes conserved.
    assert [r.request for r in trace.requests] == [0, 1]
    assert problems(trace, plan) == []
    computed = {op.device for op in trace.ops if op.kind == "compute"}
    assert computed == {op.device for op in plan.ops if isinstance(op, Compute)}
    assert any(isinstance(op, Transfer) for op in plan.ops)  # the contract covers transfers
    if backend != "sim":  # real tensors: the whole model's output, exactly
        assert all(r.extra["relative_error"] <= TOLERANCE for r in trace.requests)
        # and real processes: each device's resident memory, measured after the last request
        resident = trace.meta["resident_bytes"]
        assert set(resident) == {d.name for d in scenario.devices}
        assert all(0 < r["rss"] <= r["peak"] for r in resident.values())
    else:
        assert "resident_bytes" not in trace.meta


def test_a_trace_that_breaks_its_plan_is_named_for_each_breach(policies):
    scenario, policy = policies["mobilenet_v1", "modnn"]
    plan = policy.served()[0].plan
    trace = load_backend("sim").run(scenario, policy, TraceWriter(None, "sim", "modnn"))
    assert problems(trace, plan) == []
    transfer = next(r for r in trace.ops if r.kind == "transfer" and r.request == 0)
    later = next(r for r in trace.ops if r.request == 0 and transfer.op in plan.op(r.op).inputs)
    ops = [r for r in trace.ops if r is not transfer and r is not later]
    ops.append(dataclasses.replace(transfer, bytes=transfer.bytes - 1))
    ops.append(dataclasses.replace(later, start=transfer.end - 0.001))
    ops.append(trace.ops[0])  # recorded twice
    tampered = dataclasses.replace(trace, ops=ops)

    found = problems(tampered, plan)

    assert any(f"transfer {transfer.op}" in p and "bytes" in p for p in found)
    assert any(f"{later.op} starts" in p and f"input {transfer.op}" in p for p in found)
    assert any(f"op {trace.ops[0].op} recorded 2 times" in p for p in found)
