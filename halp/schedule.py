"""Op durations from the latency model, and a quick single-request timeline for planners.

The semantics are the simulator's, for one request at constant bandwidth: a device runs its
compute and gather ops one at a time in plan order; a device sends its transfers to each peer
one at a time in plan order (to different peers at once); a transfer also holds its link (per
direction on a star, the one channel on a shared network). The simulator (`sim/`) is the authority; this is what planners use to compare
candidate plans without importing a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from halp.latency.model import LatencyModel
from halp.model.graph import ModelGraph
from halp.plan import Compute, Gather, Input, Op, Plan, Transfer


def compute_s(op: Op, graph: ModelGraph, latency: LatencyModel) -> float:
    """Duration of a compute or gather op (zero for the input)."""
    if isinstance(op, Compute):
        return latency.compute_s(op.device, graph, op.start, op.stop, op.out)
    if isinstance(op, Gather):
        return latency.gather_s(op.device, graph.region_bytes(op.boundary, op.region))
    return 0.0


def link_of(op: Transfer, network: str) -> str:
    return "channel" if network == "shared" else f"{op.src}->{op.dst}"


@dataclass
class Timing:
    start: dict[str, float]
    end: dict[str, float]
    makespan: float

    @property
    def duration(self) -> dict[str, float]:
        return {k: self.end[k] - self.start[k] for k in self.start}


def estimate(plan: Plan, graph: ModelGraph, latency: LatencyModel) -> Timing:
    """Start and end of every op of one request that arrives at time zero."""
    cluster = latency.cluster
    free: dict[str, float] = {}
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for op in plan.ops:
        ready = max((end[i] for i in op.inputs), default=0.0)
        if isinstance(op, Input):
            start[op.id] = end[op.id] = 0.0
        elif isinstance(op, Transfer):
            sender, link = f"send:{op.src}->{op.dst}", link_of(op, cluster.network)
            t0 = max(ready, free.get(sender, 0.0), free.get(link, 0.0))
            t1 = t0 + latency.transfer_s(op.src, op.dst, op.bytes)
            free[sender] = free[link] = t1
            start[op.id], end[op.id] = t0, t1
        else:
            t0 = max(ready, free.get(op.device, 0.0))
            t1 = t0 + compute_s(op, graph, latency)
            free[op.device] = t1
            start[op.id], end[op.id] = t0, t1
    return Timing(start, end, end[plan.output])
