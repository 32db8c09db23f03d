"""A measured backend ships the plans of its caller's policy; the host serves exactly those
(`halp.serving.policy_from_plans`), or refuses in one line what it cannot serve."""

from __future__ import annotations

import json

import pytest
from conftest import write_scenario

from halp.errors import BackendError, PlanError
from halp.plan import Plan
from halp.scenario import load_scenario
from halp.serving import FixedPolicy, plans_json, policy_for, policy_from_plans, read_plans

SCENARIO = """\
name: serving
seed: 3
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine, speed: 0.05}
  - {name: b, profile: this-machine}
network: {kind: star, bandwidth: 50Mbps}
method: {name: halp}
workload: {requests: 2, arrival: periodic, interval: 100ms, deadline: 1s}
"""


@pytest.fixture
def scenario(tmp_path):
    return load_scenario(write_scenario(tmp_path, SCENARIO))


def shipped(policy) -> list[Plan]:
    return read_plans(plans_json(policy), "plans.json")


def test_the_one_plan_shipped_is_the_plan_served_for_every_request(scenario):
    modnn = policy_for(scenario.with_values({"method.name": "modnn"}))

    served = policy_from_plans(scenario, shipped(modnn), "plans.json")

    assert isinstance(served, FixedPolicy)
    assert served.serve(1, 0.1, []).plan.to_json() == modnn.served()[0].plan.to_json()


def test_model_selection_ships_its_plans_and_keeps_choosing_per_request(scenario):
    select = scenario.with_values({"method": {"name": "select", "base": "halp",
                                              "variants": ["0.25_128", "0.5_160"]}})
    own = policy_for(select)

    served = policy_from_plans(select, shipped(own), "plans.json")

    assert type(served) is type(own) and not isinstance(served, FixedPolicy)
    assert {s.plan.model for s in served.served()} == {"0.25_128", "0.5_160"}


def test_plans_the_scenario_cannot_serve_are_refused_naming_the_file(scenario):
    halp, modnn = (policy_for(scenario.with_values({"method.name": m})).served()[0].plan
                   for m in ("halp", "modnn"))
    other = scenario.with_values({"model.width": 0.5, "model.resolution": 160})
    with pytest.raises(BackendError, match="plans.json: its 2 plans are not"):
        policy_from_plans(scenario, [halp, modnn], "plans.json")
    with pytest.raises(BackendError, match="plans.json: the plan is for 0.25_128"):
        policy_from_plans(other, [halp], "plans.json")
    broken = Plan.from_dict({**halp.to_dict(), "ops": halp.to_dict()["ops"][:-1]})
    with pytest.raises(PlanError):
        policy_from_plans(scenario, [broken], "plans.json")


@pytest.mark.parametrize("text, reason", [
    ("", "not JSON"), ("[" * 100_000, "not JSON"), ("[]", "holds no plan"),
    ("[1, 2]", "not a list of plans"), (json.dumps({"ops": 3}), "not a list of plans"),
])
def test_a_plans_file_that_is_not_plans_is_one_line(text, reason):
    with pytest.raises(BackendError, match=reason) as err:
        read_plans(text, "plans.json")
    assert "plans.json" in str(err.value) and "\n" not in str(err.value)
