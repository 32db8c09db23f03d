"""What a backend asks before each request: which plan to run now.

A backend calls `policy.serve(request, now_s, observed)` when a request's input arrives,
passing the transfers it has observed so far (never the future). A static method always
answers the same plan; model selection (`halp.methods.select`) answers per request. Backends
know nothing of methods beyond this call; `halp.serving` builds the policy a scenario asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from halp.methods import Prepared
from halp.plan import Plan


@dataclass(frozen=True)
class Observation:
    """One finished transfer, as the host saw it."""

    time_s: float  # when it ended
    link: str  # the secondary whose link carried it
    bytes: int
    duration_s: float


@dataclass
class Served:
    """A policy's answer for one request: the plan, the model it runs, and what the policy
    predicted (for the report)."""

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
