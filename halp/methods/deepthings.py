"""DeepThings (Zhao et al., 2018): fused tile partitioning of the first layers.

The first `fused_layers` layers are fused; their output map is cut into an N x M grid of
tiles, and each tile is computed from its own input region (its halo included, so tiles
overlap at the input and need no exchange). Tiles are assigned to devices by list scheduling
on the latency model (each tile goes to the device predicted to finish it first, its transfers
included), which is what DeepThings' work stealing converges to. The host gathers the tiles
and runs the rest of the network. Unless the scenario fixes `fused_layers`, the cut is chosen
among the graph's cut points by the predicted latency of the whole plan (among the cuts whose
plan fits every device's memory, when devices have limits).
"""

from __future__ import annotations

from halp.cluster import SHARED, Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
from halp.memory import fits
from halp.methods.common import PlanBuilder, bounds, proportional
from halp.model.graph import ModelGraph, Range, Region
from halp.plan import Plan
from halp.schedule import estimate


def tiles(graph: ModelGraph, boundary: int, grid: tuple[int, int]) -> list[Region]:
    n = min(grid[0], graph.height(boundary))
    m = min(grid[1], graph.width(boundary))
    rows = bounds(proportional(graph.height(boundary), [1.0] * n))
    cols = bounds(proportional(graph.width(boundary), [1.0] * m))
    return [Region(Range(*r), Range(*c)) for r in rows for c in cols]


def plan_at(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str, cut: int,
            grid: tuple[int, int]) -> Plan:
    host = cluster.host
    b = PlanBuilder(graph, "deepthings", model, host, cluster.names)
    source = b.input()
    b.segments.append((0, cut))
    # List scheduling: when would each device finish one more tile? Sends to one device queue
    # behind each other; on a shared channel all sends do.
    free = {d: 0.0 for d in cluster.names}
    link_free = {d: 0.0 for d in cluster.names}
    shared = cluster.network == SHARED
    assigned: list[tuple[str, Region]] = []
    for tile in tiles(graph, cut, grid):
        need = graph.rows_needed(0, cut, tile)
        options = []
        for device in cluster.names:
            work = latency.compute_s(device, graph, 0, cut, tile)
            if device == host:
                options.append((free[device] + work, device, 0.0))
                continue
            queue = max(link_free.values()) if shared else link_free[device]
            arrive = queue + latency.transfer_s(host, device, graph.region_bytes(0, need))
            back = latency.transfer_s(device, host, graph.region_bytes(cut, tile))
            options.append((max(free[device], arrive) + work + back, device, arrive))
        finish, device, sent = min(options)
        if device == host:
            free[device] = finish
        else:
            free[device] = finish - latency.transfer_s(device, host, graph.region_bytes(cut, tile))
            link_free[device] = sent
        assigned.append((device, tile))
    remote = [(d, t) for d, t in assigned if d != host]
    sends = [(d, t, b.transfer(host, d, 0, graph.rows_needed(0, cut, t), [source])) for d, t in remote]
    computes = [(d, t, b.compute(d, 0, cut, t, [s])) for d, t, s in sends]
    pieces = [b.compute(host, 0, cut, t, [source]) for d, t in assigned if d == host]
    pieces += [b.transfer(d, host, cut, t, [c]) for d, t, c in computes]
    gathered = b.gather(host, cut, graph.full(cut), pieces)
    return b.build(b.host_tail(cut, gathered), fused_layers=cut, grid=list(grid),
                   tiles={d: sum(1 for x, _ in assigned if x == d) for d in cluster.names})


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str,
         grid: tuple[int, int] = (3, 3), fused_layers: int | None = None) -> Plan:
    if fused_layers is not None:
        if fused_layers > graph.spatial_end:
            raise PlanError(f"method.fused_layers {fused_layers} is past the row-splittable part "
                            f"(at most {graph.spatial_end} layers) of {graph.name}")
        return plan_at(graph, cluster, latency, model, fused_layers, grid)
    candidates = [c for c in graph.cut_points() if c > 0]
    plans = [plan_at(graph, cluster, latency, model, c, grid) for c in candidates]
    if cluster.memory_limited:  # only cuts whose plan fits every device, when any does
        plans = [p for p in plans if fits(p, graph, cluster)] or plans
    return min(plans, key=lambda p: estimate(p, graph, latency).makespan)
