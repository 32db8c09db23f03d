"""What a backend asks before each request: which plan to run now.

A backend calls `policy.serve(request, now_s, observed)` when a request's input arrives,
passing the transfers it has observed so far (never the future). A static method always
answers the same plan; model selection (`select`) answers per request. Backends know nothing
of methods beyond this call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from halp.methods import Prepared, make_plan, prepare
from halp.plan import Plan
from halp.scenario import Scenario


@dataclass(frozen=True)
class Observation:
    """One finished transfer, as the host saw it."""

    time_s: float  # when it ended
    link: str  # the secondary whose link carried it
    bytes: int
    duration_s: float


@dataclass
class Served:
    plan: Plan
    prepared: Prepared
    predicted_s: float | None = None
    top1: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    def serve(self, request: int, now_s: float, observed: list[Observation]) -> Served: ...

    def served(self) -> list[Served]:
        """Every distinct plan this policy may answer (backends load their models up front)."""
        ...


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


def policy_for(scenario: Scenario) -> Policy:
    if scenario.method.name == "select":
        from halp.methods.select import SelectPolicy

        return SelectPolicy(scenario)
    return StaticPolicy(scenario)
