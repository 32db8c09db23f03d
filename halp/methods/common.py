"""What planners share: a builder that numbers ops, and the host-only tail of a network."""

from __future__ import annotations

from collections.abc import Callable

from halp.latency.model import LatencyModel
from halp.model.graph import ModelGraph, Region
from halp.plan import Compute, Gather, Input, Op, Plan, Transfer


class PlanBuilder:
    """Appends ops in plan order and gives each a stable id (`c3`, `t4`, `g5`)."""

    def __init__(self, graph: ModelGraph, method: str, model: str, host: str, devices: list[str]):
        self.graph = graph
        self.method, self.model, self.host, self.devices = method, model, host, devices
        self.ops: list[Op] = []
        self.segments: list[tuple[int, int]] = []

    def _id(self, prefix: str) -> str:
        return f"{prefix}{len(self.ops)}"

    def input(self) -> str:
        op = Input("in", self.host, 0, self.graph.full(0))
        self.ops.append(op)
        return op.id

    def compute(self, device: str, start: int, stop: int, out: Region, inputs: list[str]) -> str:
        op = Compute(self._id("c"), device, start, stop, out, tuple(inputs),
                     self.graph.flops(start, stop, out))
        self.ops.append(op)
        return op.id

    def transfer(self, src: str, dst: str, boundary: int, region: Region, inputs: list[str]) -> str:
        op = Transfer(self._id("t"), src, dst, boundary, region,
                      self.graph.region_bytes(boundary, region), tuple(inputs))
        self.ops.append(op)
        return op.id

    def gather(self, device: str, boundary: int, region: Region, inputs: list[str]) -> str:
        if len(inputs) == 1:
            only = next(op for op in self.ops if op.id == inputs[0])
            if only.block() == (device, boundary, region):
                return inputs[0]  # nothing to stitch
        op = Gather(self._id("g"), device, boundary, region, tuple(inputs))
        self.ops.append(op)
        return op.id

    def host_tail(self, start: int, source: str) -> str:
        """Run layers [start, end) on the host from the whole map `source` at `start`."""
        return self.host_tail_until(start, len(self.graph), source)

    def host_tail_until(self, start: int, stop: int, source: str) -> str:
        """Run layers [start, stop) on the host from the whole map `source` at `start`."""
        if start >= stop:
            return source
        return self.compute(self.host, start, stop, self.graph.full(stop), [source])

    def build(self, output: str, **meta: object) -> Plan:
        return Plan(self.method, self.model, self.host, list(self.devices), list(self.ops), output,
                    list(self.segments), dict(meta))


def proportional(total: int, weights: list[float]) -> list[int]:
    """Split `total` integer units in proportion to `weights` (largest remainders)."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0 for _ in weights]
    raw = [total * w / s for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(weights)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def bounds(counts: list[int], start: int = 0) -> list[tuple[int, int]]:
    """Consecutive half-open ranges of the given sizes."""
    out, at = [], start
    for c in counts:
        out.append((at, at + c))
        at += c
    return out


def host_first(counts: list[int]) -> tuple[tuple[int, int], ...]:
    """The secondaries' blocks of rows when the host keeps the first `counts[0]` rows and each
    secondary, in send order, takes the next `counts[k]`."""
    return tuple(bounds(counts)[1:])


def rate(latency: LatencyModel, device: str, graph: ModelGraph, start: int, stop: int) -> float:
    """How fast `device` runs layers [start, stop) on the whole map: shares start from it."""
    return 1.0 / max(latency.compute_s(device, graph, start, stop, graph.full(stop)), 1e-12)


def descend(cost: Callable[[list[int]], float], points: list[int], height: int, step: int,
            last_step: int = 1, together: bool = False, pairs: bool = True) -> tuple[list[int], float]:
    """Coordinate descent over non-decreasing integer points in [0, height]: move one point
    (or, with `together`, two equal neighbours (2i+1, 2i+2) at once) by +-step while that
    lowers `cost`; when no such move does and `pairs` is set, try any two points at once
    (+-step each), since a split's time is a maximum over devices and lowering it can take
    moving two edges; then halve the step, down to `last_step`. Split times are piecewise
    constant in the points, so gradients do not help; halving steps skip the flat parts."""
    n = len(points)
    two = ([[(i, 1), (j, sign)] for i in range(n) for j in range(i + 1, n) for sign in (1, -1)]
           if pairs else [])
    t = cost(points)
    while step >= last_step:
        improved = True
        while improved:
            single = [[(i, 1)] for i in range(n)]
            if together:
                single += [[(i, 1), (i + 1, 1)] for i in range(1, n - 1, 2) if points[i] == points[i + 1]]
            improved = False
            for moves in (single, two):
                for move in moves:
                    for delta in (-step, step):
                        trial = points.copy()
                        for i, sign in move:
                            trial[i] += sign * delta
                        if not all(0 <= a <= b <= height for a, b in zip(trial, [*trial[1:], height], strict=True)):
                            continue
                        tt = cost(trial)
                        if tt < t - 1e-12:
                            points, t, improved = trial, tt, True
                if improved:
                    break
        step //= 2
    return points, t
