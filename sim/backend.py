"""The simulator as a backend: `BACKEND.run(scenario, policy, writer) -> Trace`.

Requests arrive as the scenario's workload says (arrival times drawn from its seed); before each
one the policy chooses the plan; every op becomes an `OpRecord` and every request a
`RequestRecord`, written as each request finishes.
"""

from __future__ import annotations

from collections.abc import Sequence

from halp.cluster import Cluster
from halp.model.graph import ModelGraph
from halp.plan import Plan, Transfer
from halp.policy import Policy, Served
from halp.scenario import Scenario
from halp.trace import OpRecord, RequestRecord, Trace, TraceWriter
from halp.workload import arrival_times
from sim.engine import Request, Simulator, simulate

__all__ = ["BACKEND", "SimulatorBackend", "simulate", "simulate_trace", "simulator_for",
           "request_records"]

NAME = "sim"


def simulator_for(scenario: Scenario, **options) -> Simulator:
    """A simulator of the scenario's cluster and network (its seed, its jitter)."""
    return Simulator(scenario.cluster(), seed=scenario.seed, jitter_s=scenario.network.jitter,
                     **options)


def request_records(request: Request, deadline: float | None) -> tuple[list[OpRecord], RequestRecord]:
    c = request.compiled
    plan: Plan = c.plan
    ops = [OpRecord(request.id, op.id, op.kind, c.resource[i], c.device[i], request.start[i],
                    request.end[i], c.nbytes[i], peer=op.dst if isinstance(op, Transfer) else "")
           for i, op in enumerate(plan.ops)]
    served = request.info if isinstance(request.info, Served) else None
    record = RequestRecord(
        request=request.id, arrival=request.arrival, finish=request.finish, method=plan.method,
        model=plan.model, deadline=deadline,
        predicted_s=served.predicted_s if served else None,
        top1=served.top1 if served else None,
        extra=dict(served.extra) if served and served.extra else {},
    )
    return ops, record


class SimulatorBackend:
    """The simulator (`halp.backends.Backend`): SimPy virtual time, every op timed by the
    latency model of the scenario's devices."""

    name = NAME

    def check(self, scenario: Scenario) -> None:
        """Every valid scenario can be simulated."""

    def run(self, scenario: Scenario, policy: Policy, writer: TraceWriter) -> Trace:
        deadline = scenario.workload.deadline

        def done(request: Request) -> None:
            ops, record = request_records(request, deadline)
            for op in ops:
                writer.op(op)
            writer.request(record)

        sim = simulator_for(scenario, on_done=done)
        sim.serve(policy, arrival_times(scenario.workload, scenario.seed))
        sim.run()
        trace = writer.trace
        trace.meta.update({"scenario": scenario.name, "seed": scenario.seed,
                           "network": scenario.network.kind, "events": sim.events,
                           "virtual_s": sim.env.now})
        notes = []
        if scenario.network.loss:
            notes.append("packet loss is not simulated")
        if getattr(scenario, "dynamics", None) is not None:
            notes.append("dynamics (device speed changes) are not simulated")
        if notes:
            trace.meta["notes"] = notes
        return trace


BACKEND = SimulatorBackend()


def simulate_trace(cluster: Cluster, graph: ModelGraph, plans: Plan | Sequence[Plan],
                   arrivals: Sequence[float], *, deadline: float | None = None, seed: int = 0,
                   jitter_s: float = 0.0) -> Trace:
    """Plans run on a cluster without a scenario or a policy (request `i` runs `plans[i]`, or
    the one plan for all), every op recorded: for tests, figures and notebooks."""
    many = list(plans) if isinstance(plans, Sequence) else [plans] * len(arrivals)
    writer = TraceWriter(None, NAME, many[0].method if many else "")

    def done(request: Request) -> None:
        ops, record = request_records(request, deadline)
        for op in ops:
            writer.op(op)
        writer.request(record)

    sim = Simulator(cluster, seed=seed, jitter_s=jitter_s, on_done=done)
    for plan, at in zip(many, arrivals, strict=True):
        sim.submit(sim.compile(plan, graph), at)
    sim.run()
    writer.trace.meta.update({"events": sim.events, "virtual_s": sim.env.now})
    return writer.trace
