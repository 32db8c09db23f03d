"""The policy a scenario asks for, and the plans a backend ships to the device that serves them.

`policy_for(scenario)` is the scenario's own policy: one plan for a static method, a choice per
request for model selection. A measured backend runs its host on another process or machine, so
it writes the plans the caller's policy serves (`plans_json`) and the host serves exactly those
(`policy_from_plans`): the plans the simulator ran are the plans the devices run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from halp.errors import BackendError
from halp.methods import Prepared, make_plan, prepare
from halp.methods.select import SelectPolicy
from halp.plan import Plan, validate
from halp.policy import Observation, Policy, Served
from halp.scenario import Scenario


class StaticPolicy:
    """One plan for every request."""

    def __init__(self, scenario: Scenario, prepared: Prepared | None = None):
        self.prepared = prepared or prepare(scenario)
        self.answer = Served(make_plan(scenario, self.prepared), self.prepared)

    def serve(self, request: int, now_s: float, observed: list[Observation]) -> Served:
        return self.answer

    def served(self) -> list[Served]:
        return [self.answer]


class FixedPolicy:
    """Serves one given answer for every request (a plan chosen elsewhere)."""

    def __init__(self, answer: Served):
        self.answer = answer

    def serve(self, request: int, now_s: float, observed: list[Observation]) -> Served:
        return self.answer

    def served(self) -> list[Served]:
        return [self.answer]


def policy_for(scenario: Scenario, prepared: Prepared | None = None) -> Policy:
    """The scenario's own policy. `prepared` (the scenario's model on its cluster) saves
    building the model again for a static method; model selection prepares its variants."""
    if scenario.method.name == "select":
        return SelectPolicy(scenario)
    return StaticPolicy(scenario, prepared)


def plans_json(policy: Policy) -> str:
    """The plans `policy` serves, as the file `halp host --plans` reads."""
    return json.dumps([s.plan.to_dict() for s in policy.served()]) + "\n"


def read_plans(text: str, where: str) -> list[Plan]:
    """The plans of a `--plans` file (a list of plans, or one plan); `where` names it."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than a plan ever is
        raise BackendError(f"plans file {where} is not JSON, or not a plan's") from None
    raw = data if isinstance(data, list) else [data]
    try:
        plans = [Plan.from_dict(p) for p in raw]
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise BackendError(f"plans file {where}: not a list of plans "
                           f"({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})") from None
    if not plans:
        raise BackendError(f"plans file {where}: holds no plan")
    return plans


def policy_from_plans(scenario: Scenario, plans: Sequence[Plan], where: str) -> Policy:
    """The policy that serves exactly `plans` on `scenario`'s devices.

    The scenario's own policy when it serves these plans (model selection keeps choosing per
    request); otherwise one plan chosen elsewhere (by `halp validate`, a test, a notebook) is
    served for every request, once checked against the scenario's model. Several plans that
    are not the scenario's policy's are refused: nothing here would know which to serve when."""
    wanted = sorted(p.to_json() for p in plans)
    if len(plans) > 1 or scenario.method.name == "select":
        policy = policy_for(scenario)
        if sorted(s.plan.to_json() for s in policy.served()) == wanted:
            return policy
        if len(plans) > 1:
            raise BackendError(f"plans file {where}: its {len(plans)} plans are not the ones "
                               "the scenario's policy serves")
    prepared = prepare(scenario)
    plan = plans[0]
    if plan.model != prepared.spec.variant:
        raise BackendError(f"plans file {where}: the plan is for {plan.model}, the scenario's "
                           f"model is {prepared.spec.variant}")
    validate(plan, prepared.graph)
    return FixedPolicy(Served(plan, prepared))
