"""The contract between a plan and the trace of its run, whichever backend ran it.

A backend may time ops however it likes (virtual time, a wall clock, clocks of other machines
mapped onto the host's), but what it ran must be the plan: every op of a request once; no op
before its inputs end; a device computing one op at a time; every transfer moving the bytes
the plan says. `problems` names each breach in one line, so a test, or a user who doubts a
measurement, can ask any trace. Times from another device's clock are trusted only to their
`uncertainty_s` (half the best round trip of the clock offset).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from halp.plan import Plan, Transfer
from halp.trace import OpRecord, Trace

EPS_S = 1e-6  # sums of float seconds
ON_A_DEVICE = ("compute", "gather")  # the kinds that hold a device's compute


def problems(trace: Trace, plan_of: Plan | Callable[[int], Plan]) -> list[str]:
    """Every way `trace` breaks the contract of its plans (`plan_of(request)`, or one plan for
    every request); empty when it keeps it."""
    which = (lambda request: plan_of) if isinstance(plan_of, Plan) else plan_of
    found: list[str] = []
    by_request: dict[int, list[OpRecord]] = defaultdict(list)
    for record in trace.ops:
        by_request[record.request].append(record)
    for request in trace.requests:
        plan = which(request.request)
        records = by_request.pop(request.request, [])
        found += _request_problems(request.request, plan, records, request.arrival, request.finish)
    found += [f"request {r}: ops recorded but the request is not" for r in sorted(by_request)]
    found += _overlaps(trace.ops)
    return found


def _slack(*records: OpRecord) -> float:
    return EPS_S + sum(r.uncertainty_s for r in records)


def _request_problems(request: int, plan: Plan, records: list[OpRecord], arrival: float,
                      finish: float) -> list[str]:
    found: list[str] = []
    ids = [r.op for r in records]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    missing = sorted(set(plan.by_id()) - set(ids))
    extra = sorted(set(ids) - set(plan.by_id()))
    found += [f"request {request}: op {i} recorded {ids.count(i)} times" for i in twice]
    found += [f"request {request}: op {i} of the plan never ran" for i in missing]
    found += [f"request {request}: op {i} is not in plan {plan.method}" for i in extra]
    at = {r.op: r for r in records}
    for op in plan.ops:
        record = at.get(op.id)
        if record is None:
            continue
        if record.end < record.start - _slack(record):
            found.append(f"request {request}: {op.id} ends before it starts")
        if record.start < arrival - _slack(record) or record.end > finish + _slack(record):
            found.append(f"request {request}: {op.id} outside the request's arrival and finish")
        for name in op.inputs:
            before = at.get(name)
            if before is not None and record.start < before.end - _slack(record, before):
                found.append(f"request {request}: {op.id} starts "
                             f"{(before.end - record.start) * 1e3:.3f} ms before its input "
                             f"{name} ends")
        if isinstance(op, Transfer) and record.bytes != op.bytes:
            found.append(f"request {request}: transfer {op.id} ({op.src}->{op.dst}) moved "
                         f"{record.bytes} bytes, the plan says {op.bytes}")
    return found


def _overlaps(records: list[OpRecord]) -> list[str]:
    """A device computes one op at a time, across requests too."""
    found: list[str] = []
    by_device: dict[str, list[OpRecord]] = defaultdict(list)
    for record in records:
        if record.kind in ON_A_DEVICE and record.end > record.start:
            by_device[record.device].append(record)
    for device, held in sorted(by_device.items()):
        held.sort(key=lambda r: (r.start, r.end))
        for before, after in zip(held, held[1:], strict=False):
            if after.start < before.end - _slack(before, after):
                found.append(f"{device} computes request {after.request}'s {after.op} while "
                             f"request {before.request}'s {before.op} runs "
                             f"({(before.end - after.start) * 1e3:.3f} ms overlap)")
    return found
