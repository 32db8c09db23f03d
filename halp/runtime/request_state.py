"""A worker's requests in flight: what each still waits for, and when it can be reported.

A request is done on a device when the device has computed its Compute and Gather ops, handed
every block it sends to its socket, and received every block sent to it. Then, and only once,
the worker REPORTs it with the times on its clock. On a worker the I/O thread alone reads and
writes these; the compute and sender threads tell it what they finished through its mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halp.plan import Plan
from halp.runtime.device import compute_ops, destinations, receives_of
from halp.runtime.wire import WireError

MAX_FINISHED = 100_000  # requests remembered as done, so that a late message cannot restart one


@dataclass
class RequestState:
    """One request on one device, from its first message (START or a block) to its report."""

    plan_id: int
    expect: set[str]  # transfers to this device not yet arrived
    compute_left: bool  # its Compute and Gather ops here are not done
    sends_left: int  # peers whose sends are not done
    records: list[tuple[str, float, float]] = field(default_factory=list)  # (op, start, end)
    # transfer -> when it was held, and the bytes of the payload that arrived
    arrived: dict[str, tuple[float, int]] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)  # transfer -> when it was handed over

    @classmethod
    def of(cls, plan_id: int, plan: Plan, device: str) -> RequestState:
        """What `device` has to do for a request of `plan`, none of it done yet."""
        return cls(plan_id, {op.id for op in receives_of(plan, device)},
                   bool(compute_ops(plan, device)), len(destinations(plan, device)))

    def received(self, op: str, at: float, nbytes: int) -> None:
        self.arrived[op] = (at, nbytes)
        self.expect.discard(op)

    def computed(self, records: list[tuple[str, float, float]]) -> None:
        self.records = records
        self.compute_left = False

    def peer_done(self) -> None:
        """Every block of this request to one peer has been handed over."""
        self.sends_left -= 1

    @property
    def done(self) -> bool:
        return not (self.expect or self.compute_left or self.sends_left)

    def report(self) -> dict[str, Any]:
        """The body of its REPORT."""
        return {"plan_id": self.plan_id, "ops": [list(r) for r in self.records],
                "sent": self.sent, "arrived": {op: list(v) for op, v in self.arrived.items()}}


class RequestTable:
    """The requests of the current run on this device: those in flight and those done here
    (reported or failed), which a late START or block may not start again."""

    def __init__(self) -> None:
        self.open: dict[int, RequestState] = {}
        self.finished: set[int] = set()

    def get(self, request: int) -> RequestState | None:
        return self.open.get(request)

    def check_new(self, request: int) -> None:
        if request in self.finished:
            raise WireError(f"request {request} is already done here")

    def add(self, request: int, state: RequestState) -> RequestState:
        self.open[request] = state
        return state

    def take_done(self, request: int) -> RequestState | None:
        """`request`'s state if it is done, now finished here; None while it is not."""
        state = self.open.get(request)
        if state is None or not state.done:
            return None
        del self.open[request]
        if len(self.finished) > MAX_FINISHED:
            self.finished.clear()
        self.finished.add(request)
        return state

    def fail(self, request: int) -> None:
        self.open.pop(request, None)
        self.finished.add(request)

    def clear(self) -> None:
        self.open.clear()
        self.finished.clear()
